"""GSViT encoder inference: JAX (jit, BatchNorm folded) vs timm PyTorch (eager, torch.compile).

    python benchmarks/encoder_inference.py [--rounds 3] [--batch 64] [--no-compile] [--write]
    python benchmarks/encoder_inference.py --batch 2048 --dtype bfloat16 [--no-torch]  # GPU

Same M5 weights and inputs in every implementation, each in its own process (`workers.py`: PyTorch
slows down in a process where oneDNN ran from JAX); measurements are interleaved round by round so
machine noise hits all of them alike. Reports batch-1 latency (median ms) and batch-N throughput
(img/s), the JAX/PyTorch ratio, and checks that the outputs agree with PyTorch eager in float32.
PyTorch runs on CUDA when it has it; `--dtype bfloat16` computes in bf16 (PyTorch under autocast);
`--no-torch` times JAX alone (a GPU whose torch has no CUDA), checked against PyTorch on the CPU at
batch 1. In bfloat16 it also reports how far JAX's bfloat16 output is from its float32 output on
generated frames, and how often the phase head's argmax agrees. `--write` stores the table in
benchmarks/RESULTS.md under this machine's description.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from report import update_section  # noqa: E402
from workers import Worker  # noqa: E402

EAGER = 'PyTorch eager (timm)'
JAX_NAME = 'JAX jit, folded BN'
PRECISION_FRAMES = 126  # generated frames for the bfloat16 vs float32 check


def timm_encoder(device: str):
    import timm
    import torch
    from gsvit_jax.convert.torch_random import randomize_
    torch.manual_seed(0)
    model = timm.create_model('efficientvit_m5', pretrained=False)
    randomize_(model, seed=0)  # realistic BN statistics and attention biases
    return model.to(device)


def make_inputs(batches) -> dict[int, np.ndarray]:
    """The same random images in every worker and call: (b, 224, 224, 3) float32, seeded by b."""
    return {b: np.random.default_rng(b).uniform(size=(b, 224, 224, 3)).astype(np.float32)
            for b in batches}


def calibrated_timm_encoder(frames: np.ndarray):
    """`timm_encoder` with its BatchNorm statistics measured on `frames` (NHWC): with random
    statistics the features hardly depend on the image (their spread across frames is ~0.04% of
    their size, 40x below bfloat16 rounding), unlike a trained encoder's."""
    import torch
    model = timm_encoder('cpu')
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: one pass gives the batch's statistics
    with torch.no_grad():
        model.train().forward_features(torch.from_numpy(frames.transpose(0, 3, 1, 2).copy()))
    return model.eval()


def precision_check(dtype) -> dict:
    """bfloat16 vs float32 on generated surgery-like frames, JAX and (for scale) PyTorch
    autocast: the encoder output's largest deviation and its scale, and the argmax agreement of a
    phase head (the paper's MLP) trained on the float32 latents of the even frames of seven
    generated videos, one per phase (scenes that differ, as phases do)."""
    import jax
    import jax.numpy as jnp
    import optax
    from gsvit_jax.convert import abstract_variables, from_torch
    from gsvit_jax.data.synthetic import surgical_video
    from gsvit_jax.models import cast_kernels, fold_batchnorm, gsvit_encoder
    from gsvit_jax.models.phase_head import NUM_PHASES, PhaseHead, head_input
    from gsvit_jax.preprocess import preprocess
    per_phase = PRECISION_FRAMES // NUM_PHASES
    frames = np.asarray(preprocess(np.concatenate([
        surgical_video(per_phase, 224, 224, seed=phase) for phase in range(NUM_PHASES)]),
        channel_order='rgb'))
    model = calibrated_timm_encoder(frames)
    variables = fold_batchnorm(from_torch(model.state_dict(), abstract_variables(gsvit_encoder()),
                                          drop_prefixes=('head.',)))
    features = {d: jax.jit(gsvit_encoder(fused=True, dtype=d).apply)(cast_kernels(variables, d),
                                                                     frames)
                for d in ('float32', 'bfloat16')}
    features.update({f'torch {d}': torch_output(model.forward_features, frames, 'cpu',
                                                autocast=d == 'bfloat16')
                     for d in ('float32', 'bfloat16')})
    latent = {name: head_input(jnp.asarray(f, jnp.float32), pooled=False)
              for name, f in features.items()}
    labels = np.repeat(np.arange(NUM_PHASES), per_phase)
    head, tx = PhaseHead(), optax.adam(1e-3)
    train_x, train_y = latent['float32'][::2], jnp.asarray(labels[::2])
    params = head.init(jax.random.key(0), train_x)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state):
        loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(  # noqa: E731
            head.apply(p, train_x), train_y).mean()
        updates, opt_state = tx.update(jax.grad(loss)(params), opt_state)
        return optax.apply_updates(params, updates), opt_state

    for _ in range(100):
        params, opt_state = step(params, opt_state)
    phases = {name: np.asarray(jnp.argmax(head.apply(params, x), -1))
              for name, x in latent.items()}

    def versus(low, high):
        return dict(deviation=float(jnp.abs(latent[low] - latent[high]).max()),
                    agreement=float(np.mean(phases[low] == phases[high])))

    return dict(jax=versus('bfloat16', 'float32'), torch=versus('torch bfloat16', 'torch float32'),
                scale=float(jnp.abs(latent['float32']).max()),
                spread=float(jnp.std(latent['float32'], axis=0).mean()),
                held_out=float(np.mean(phases['float32'][1::2] == labels[1::2])),
                frames=PRECISION_FRAMES)


def jax_side(batch: int, dtype_name: str, reference_check: bool) -> dict:
    """Worker: the folded, jitted JAX encoder on the same weights as timm's."""
    import jax
    import jax.numpy as jnp
    from report import backend_name, machine_description
    from gsvit_jax.convert import abstract_variables, from_torch
    from gsvit_jax.models import cast_kernels, fold_batchnorm, gsvit_encoder
    torch_model = timm_encoder('cpu')
    state_dict = {k: v.cpu() for k, v in torch_model.state_dict().items()}
    variables = from_torch(state_dict, abstract_variables(gsvit_encoder()),
                           drop_prefixes=('head.',))
    dtype = jnp.dtype(dtype_name)
    folded = jax.device_put(cast_kernels(fold_batchnorm(variables), dtype))
    encoder = jax.jit(gsvit_encoder(fused=True, dtype=dtype).apply)
    inputs = {b: jax.device_put(x) for b, x in make_inputs((1, batch)).items()}
    def run(b):
        encoder(folded, inputs[b]).block_until_ready()

    impls = {
        'run': run,
        'output': lambda b: np.asarray(encoder(folded, inputs[b]), np.float32),
        'info': lambda: dict(machine=machine_description(), backend=backend_name(),
                             version=jax.__version__),
        'precision': lambda: precision_check(dtype),
    }
    if reference_check:  # --no-torch: PyTorch on this CPU is the batch-1 reference
        impls['reference'] = lambda b: torch_output(torch_model.forward_features,
                                                   make_inputs((b,))[b], 'cpu')
    return impls


def torch_output(model, x: np.ndarray, device: str, autocast: bool = False) -> np.ndarray:
    """float32 NHWC features of a PyTorch encoder on NHWC x."""
    import torch
    with torch.inference_mode(), torch.autocast(device, torch.bfloat16, enabled=autocast):
        out = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(device))
    return out.float().cpu().numpy().transpose(0, 2, 3, 1)


def torch_side(batch: int, dtype_name: str, compiled: bool) -> dict:
    """Worker: timm's encoder, eager or `torch.compile`d, on CUDA when torch has it."""
    import torch
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cpu':
        torch.set_num_threads(os.cpu_count() or 1)
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    bf16 = dtype_name == 'bfloat16'
    model = timm_encoder(device)
    forward = torch.compile(model.forward_features) if compiled else model.forward_features
    inputs = {b: torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(device)
              for b, x in make_inputs((1, batch)).items()}

    def run(b):
        with torch.inference_mode(), torch.autocast(device, torch.bfloat16, enabled=bf16):
            forward(inputs[b])
        sync()

    impls = {'run': run,
             'output': lambda b: torch_output(forward, make_inputs((b,))[b], device, bf16),
             'reference': lambda b: torch_output(model.forward_features, make_inputs((b,))[b],
                                                 device),
             'info': lambda: dict(version=torch.__version__, device=device,
                                  threads=torch.get_num_threads())}
    if compiled:
        run(1)  # compiles here: a failure is the worker's setup error
    return impls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--latency-repeats', type=int, default=20)
    parser.add_argument('--throughput-repeats', type=int, default=3)
    parser.add_argument('--no-compile', action='store_true', help='skip torch.compile')
    parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'],
                        help='compute dtype (parameters stay float32)')
    parser.add_argument('--no-torch', action='store_true', help='time JAX only')
    parser.add_argument('--write', action='store_true', help='update benchmarks/RESULTS.md')
    args = parser.parse_args()
    bf16 = args.dtype == 'bfloat16'
    check = 1 if args.no_torch else args.batch  # agreement batch (--no-torch: CPU reference)

    workers = {JAX_NAME: Worker(jax_side, args.batch, args.dtype, args.no_torch)}
    try:
        if not args.no_torch:
            workers[EAGER] = Worker(torch_side, args.batch, args.dtype, False)
        if not (args.no_compile or args.no_torch):
            try:
                workers['PyTorch torch.compile (timm)'] = Worker(torch_side, args.batch,
                                                                 args.dtype, True)
            except Exception as e:  # noqa: BLE001 - reported, the benchmark goes on without it
                print(f'torch.compile unavailable: {str(e).strip().splitlines()[-1]}')
        report(args, workers, bf16, check)
    finally:
        for worker in workers.values():
            worker.close()


def report(args, workers: dict[str, Worker], bf16: bool, check: int) -> None:
    jax_worker = workers[JAX_NAME]
    info = jax_worker.call('info')
    reference = (jax_worker if args.no_torch else workers[EAGER]).call('reference', check)
    agreement = {}
    for name, worker in workers.items():  # warm-up/compile both shapes, check agreement
        worker.call('run', args.batch)
        agreement[name] = float(np.abs(worker.call('output', check) - reference).max())
    precision = jax_worker.call('precision') if bf16 else None

    latency = {name: [] for name in workers}
    throughput = {name: [] for name in workers}
    for r in range(args.rounds):
        for name, worker in workers.items():
            calls = worker.timed('run', args.latency_repeats, 1)
            latency[name].append(1e3 * statistics.median(s for s, _ in calls))
            calls = worker.timed('run', args.throughput_repeats, args.batch)
            throughput[name].append(args.batch / statistics.median(s for s, _ in calls))
        print(f'round {r + 1}/{args.rounds} done', flush=True)

    torch_info = None if args.no_torch else workers[EAGER].call('info')
    rows = []
    lat, thr = ({name: statistics.median(v[name]) for name in workers}
                for v in (latency, throughput))
    for name in workers:
        ratios = (f'{lat[EAGER] / lat[name]:.2f}x | {thr[name] / thr[EAGER]:.2f}x'
                  if EAGER in workers else '– | –')
        rows.append(f'| {name} | {lat[name]:.1f} | {thr[name]:.1f} | {ratios} '
                    f'| {agreement[name]:.1e} |')
    backend = info['backend']
    paper = ('' if backend == 'cpu' else ' The GSViT paper quotes 10,621 img/s (V100, batch 2048) '
             'and 12.1 ms batch-1 latency (A5500) for M5.')
    torch_text = ('torch not timed (--no-torch); the reference is PyTorch on the CPU at batch 1'
                  if torch_info is None else
                  f'torch {torch_info["version"]} on {torch_info["device"]}, torch threads '
                  f'{torch_info["threads"]}')
    precision_text = '' if precision is None else (
        f' bfloat16 vs float32 on {precision["frames"]} generated surgery-like frames '
        f'(`synthetic.surgical_video`, 7 scenes; the same weights with BatchNorm statistics '
        f'measured on these frames): largest encoder-output deviation JAX '
        f'{precision["jax"]["deviation"]:.3g}, PyTorch autocast '
        f'{precision["torch"]["deviation"]:.3g} (output scale {precision["scale"]:.3g}, mean '
        f'spread across frames {precision["spread"]:.3g}); phase-head argmax agreement JAX '
        f'{precision["jax"]["agreement"]:.1%}, PyTorch {precision["torch"]["agreement"]:.1%} (the '
        f'paper\'s MLP trained for this on the JAX float32 latents of the even frames, one phase '
        f'per scene; float32 accuracy on the odd frames {precision["held_out"]:.0%}).')
    table = '\n'.join([
        f'### Encoder inference (GSViT / EfficientViT-M5, {"bf16" if bf16 else "fp32"}, 224x224) '
        f'— {info["machine"]}',
        '',
        f'jax {info["version"]}, {torch_text}; each implementation in its own process '
        f'(`benchmarks/workers.py`); median of {args.rounds} interleaved rounds; latency = median '
        f'of {args.latency_repeats} batch-1 calls, throughput = median of '
        f'{args.throughput_repeats} batch-{args.batch} calls; max abs diff vs PyTorch eager in '
        f'float32 at batch {check}. Measured {time.strftime("%Y-%m-%d")} with '
        f'`python benchmarks/encoder_inference.py {" ".join(sys.argv[1:])}`.{paper}'
        f'{precision_text}',
        '',
        f'| implementation | batch-1 latency (ms) | batch-{args.batch} throughput (img/s) '
        '| latency speed-up vs eager | throughput vs eager | max abs diff vs eager |',
        '|---|---|---|---|---|---|',
        *rows,
    ])
    print(table)
    if args.write:
        update_section(f'encoder_inference {backend}' + (' bf16' if bf16 else ''), table)


if __name__ == '__main__':
    main()
