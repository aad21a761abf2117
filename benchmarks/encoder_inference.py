"""GSViT encoder inference: JAX (jit, BatchNorm folded) vs timm PyTorch (eager, torch.compile).

    python benchmarks/encoder_inference.py [--rounds 3] [--batch 64] [--no-compile] [--write]
    python benchmarks/encoder_inference.py --batch 2048 --dtype bfloat16 [--no-torch]  # GPU

Same M5 weights and inputs in every implementation; measurements are interleaved round by round so
machine noise hits all of them alike. Reports batch-1 latency (median ms) and batch-N throughput
(img/s), the JAX/PyTorch ratio, and checks that the outputs agree with PyTorch eager in float32.
PyTorch runs on CUDA when it has it; `--dtype bfloat16` computes in bf16 (PyTorch under autocast);
`--no-torch` times JAX alone (a GPU whose torch has no CUDA), checked against PyTorch on the CPU at
batch 1. `--write` stores the table in benchmarks/RESULTS.md under this machine's description.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from report import backend_name, machine_description, update_section  # noqa: E402

from gsvit_jax.convert import abstract_variables, from_torch  # noqa: E402
from gsvit_jax.convert.torch_random import randomize_  # noqa: E402
from gsvit_jax.models import fold_batchnorm, gsvit_encoder  # noqa: E402

EAGER = 'PyTorch eager (timm)'


def timm_encoder(device: str):
    import timm
    torch.manual_seed(0)
    model = timm.create_model('efficientvit_m5', pretrained=False)
    randomize_(model, seed=0)  # realistic BN statistics and attention biases
    return model.to(device)


def seconds_per_call(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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

    cuda = torch.cuda.is_available() and not args.no_torch
    device = 'cuda' if cuda else 'cpu'
    bf16 = args.dtype == 'bfloat16'
    check = 1 if args.no_torch else args.batch  # agreement batch (--no-torch: CPU reference)
    if not cuda:
        torch.set_num_threads(os.cpu_count() or 1)
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    torch_model = timm_encoder(device)
    state_dict = {k: v.cpu() for k, v in torch_model.state_dict().items()}
    variables = from_torch(state_dict, abstract_variables(gsvit_encoder()), drop_prefixes=('head.',))
    folded = jax.device_put(fold_batchnorm(variables))
    jax_fused = jax.jit(gsvit_encoder(fused=True, dtype=jnp.dtype(args.dtype)).apply)

    rng = np.random.default_rng(0)
    inputs = {b: rng.uniform(size=(b, 224, 224, 3)).astype(np.float32) for b in (1, args.batch)}
    jax_inputs = {b: jax.device_put(x) for b, x in inputs.items()}
    torch_inputs = {b: torch.from_numpy(inputs[b].transpose(0, 3, 1, 2).copy()).to(device)
                    for b in (1, check)}

    def run_jax(b):
        return jax_fused(folded, jax_inputs[b]).block_until_ready()

    def torch_runner(model, autocast=bf16):
        def run(b):
            with torch.inference_mode(), torch.autocast(device, torch.bfloat16, enabled=autocast):
                out = model(torch_inputs[b])
            sync()
            return out
        return run

    def nhwc(out) -> np.ndarray:
        out = out.float().cpu().numpy().transpose(0, 2, 3, 1) if torch.is_tensor(out) else out
        return np.asarray(out, np.float32)

    impls = {'JAX jit, folded BN': run_jax}
    if not args.no_torch:
        impls[EAGER] = torch_runner(torch_model.forward_features)
    if not (args.no_compile or args.no_torch):
        try:
            compiled = torch.compile(torch_model.forward_features)
            torch_runner(compiled)(1)
            impls['PyTorch torch.compile (timm)'] = torch_runner(compiled)
        except Exception as e:  # noqa: BLE001 - reported, the benchmark goes on without it
            print(f'torch.compile unavailable: {type(e).__name__}: {e}'.splitlines()[0])

    reference = nhwc(torch_runner(torch_model.forward_features, autocast=False)(check))
    agreement = {}
    for name, run in impls.items():  # warm-up/compile both shapes, check agreement
        outputs = {b: run(b) for b in (1, args.batch)}
        agreement[name] = float(np.abs(nhwc(outputs[check]) - reference).max())

    latency = {name: [] for name in impls}
    throughput = {name: [] for name in impls}
    for r in range(args.rounds):
        for name, run in impls.items():
            latency[name].append(1e3 * seconds_per_call(lambda: run(1), args.latency_repeats))
            secs = seconds_per_call(lambda: run(args.batch), args.throughput_repeats)
            throughput[name].append(args.batch / secs)
        print(f'round {r + 1}/{args.rounds} done', flush=True)

    rows = []
    lat, thr = ({name: statistics.median(v[name]) for name in impls} for v in (latency, throughput))
    for name in impls:
        ratios = (f'{lat[EAGER] / lat[name]:.2f}x | {thr[name] / thr[EAGER]:.2f}x'
                  if EAGER in impls else '– | –')
        rows.append(f'| {name} | {lat[name]:.1f} | {thr[name]:.1f} | {ratios} '
                    f'| {agreement[name]:.1e} |')
    backend = backend_name()
    paper = ('' if backend == 'cpu' else ' The GSViT paper quotes 10,621 img/s (V100, batch 2048) '
             'and 12.1 ms batch-1 latency (A5500) for M5.')
    table = '\n'.join([
        f'### Encoder inference (GSViT / EfficientViT-M5, {"bf16" if bf16 else "fp32"}, 224x224) '
        f'— {machine_description()}',
        '',
        f'jax {jax.__version__}, torch {torch.__version__} on {device}'
        f'{" (reference only, batch 1)" if args.no_torch else ""}, torch threads '
        f'{torch.get_num_threads()}; median of {args.rounds} interleaved rounds; latency = median '
        f'of {args.latency_repeats} batch-1 calls, throughput = median of '
        f'{args.throughput_repeats} batch-{args.batch} calls; max abs diff vs PyTorch eager in '
        f'float32 at batch {check}. Measured {time.strftime("%Y-%m-%d")} with '
        f'`python benchmarks/encoder_inference.py {" ".join(sys.argv[1:])}`.{paper}',
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
