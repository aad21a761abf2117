"""GSViT pre-training step (encoder + decoder, forward + backward + Adam): JAX vs PyTorch; memory.

    python benchmarks/pretrain_step.py [--batch 8] [--rounds 3] [--steps 2] [--torch-compile]
                                       [--remat] [--write]
    python benchmarks/pretrain_step.py --small            # m0 encoder, 128 px, narrow decoder
    python benchmarks/pretrain_step.py --batch 100 --no-torch  # JAX only (GPU, torch without CUDA)
    python benchmarks/pretrain_step.py --memory [--memory-batch 100 50] [--write]  # compile only

Throughput: the same architecture, initial weights (PyTorch's init, converted) and batch in both.
JAX runs `gsvit_jax.train.pretrain_step.make_train_step` (the real step: L1 on the sigmoid output,
Adam with the GSViT linear 1e-3 -> 1e-5 schedule, grad-norm/finite checks) jit-compiled with the
state donated; PyTorch runs timm `efficientvit_<variant>.forward_features` + the tests' reference
decoder in `train()` mode, L1, `torch.optim.Adam` (fused; `--torch-adam`) with the same schedule,
eager (and optionally `torch.compile`d, a separate copy), on CUDA when torch has it, else on the
CPU (`--no-torch` leaves PyTorch out, e.g. on a GPU whose torch build has no CUDA). Inputs are
uint8 BGR frames converted to [0, 1] inside each step. In each round every implementation runs
alone in a fresh process (`workers.py`; see `throughput` for why alone), and the rounds alternate;
reported: img/s (median of rounds), the JAX/PyTorch ratio, compile / first-step time and the losses
of the first and last step (close, not identical: same weights and data, different kernels).

Memory (`--memory`): lowers and compiles (nothing runs, nothing big is allocated: abstract state
from `jax.eval_shape`, `jax.ShapeDtypeStruct` batch) the full-size train step at batch 100, 224x224,
state donated, in float32 and bfloat16 compute (parameters and Adam state stay float32), with and
without remat (`gsvit_jax.models.remat`), and prints XLA's own `memory_analysis()` of the compiled executable for the
default backend (run it on the GPU for GPU figures).

`--write` stores the table in benchmarks/RESULTS.md (`pretrain_step <backend>` / `pretrain_memory`).
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'tests'))  # torch_gsvit_decoder
from report import (backend_name, code_version, load_average, machine_description,  # noqa: E402
                    update_section)
from workers import Worker  # noqa: E402

from gsvit_jax.convert import abstract_variables, from_torch, to_torch  # noqa: E402
from gsvit_jax.data.synthetic import surgical_video  # noqa: E402
from gsvit_jax.kernels import onednn  # noqa: E402
from gsvit_jax.models.decoder import DEFAULT_WIDTHS, gsvit_autoencoder  # noqa: E402
from gsvit_jax.pretrain import abstract_state  # noqa: E402
from gsvit_jax.train.optimizers import make_optimizer, optimizer_config  # noqa: E402
from gsvit_jax.train.pretrain_step import make_train_step  # noqa: E402
from gsvit_jax.train.state import create_train_state  # noqa: E402

GiB = 2 ** 30
# torch.optim.Adam code paths: fused (one kernel per tensor group, no whole-model temporaries;
# used here because two full-size states must fit in RAM), foreach (PyTorch's default, allocates
# model-sized temporaries) and the per-tensor loop.
ADAM_IMPLEMENTATIONS = {'fused': dict(fused=True), 'foreach': dict(foreach=True),
                        'single': dict(foreach=False)}
SMALL = dict(variant='m0', size=128, widths=(256, 128, 128, 64, 32), batch=16)
MEMORY_BUDGET_GIB = 12.0
JAX_NAME = 'JAX jit (donated state)'


def jax_step(variant: str, size: int, widths, total_steps: int, dtype=jnp.float32,
             remat: bool = False):
    """(model, optimizer, jitted train step with the state donated)."""
    model = gsvit_autoencoder(variant, size, tuple(widths), dtype=dtype, remat=remat)
    tx, schedule = make_optimizer(optimizer_config(), total_steps)
    return model, tx, jax.jit(make_train_step(model, tx, schedule, loss='l1'), donate_argnums=0)


# ---------------------------------------------------------------------------------------- memory

def conv_dtypes(hlo_text: str) -> dict[str, int]:
    """Result dtype -> count of the convolutions in compiled HLO (XLA ops or cuDNN custom-calls)."""
    found: dict[str, int] = {}
    for line in hlo_text.splitlines():
        if ' convolution(' in line or 'cudnn$conv' in line:
            match = re.search(r'= \(?([a-z]+[0-9]*)\[', line)
            if match:
                found[match.group(1)] = found.get(match.group(1), 0) + 1
    return found


def compiled_memory(args, dtype_name: str, remat: bool, batch_size: int) -> dict:
    dtype = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[dtype_name]
    model, tx, step = jax_step(args.variant, args.size, args.widths, 1000, dtype, remat)
    state = abstract_state(model, tx)  # jax.eval_shape: nothing allocated
    frames = jax.ShapeDtypeStruct((batch_size, args.size, args.size, 3), jnp.uint8)
    start = time.perf_counter()
    compiled = step.lower(state, {'frame': frames, 'next_frame': frames}).compile()
    compile_s = time.perf_counter() - start
    m = compiled.memory_analysis()
    # Live at the peak: inputs + outputs not aliased to (donated) inputs + XLA's temporaries.
    total = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
             + m.temp_size_in_bytes + m.generated_code_size_in_bytes)
    label = f'{dtype_name} remat={remat} batch {batch_size}'
    print(f'{label}: {m}', flush=True)
    print(f'{label}: total {total / GiB:.2f} GiB, compile {compile_s:.0f} s', flush=True)
    return dict(
        dtype=dtype_name, remat='on' if remat else 'off', batch=batch_size, compile=compile_s,
        total=total,
        params=sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(state.params)),
        state=sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(state)),
        args=m.argument_size_in_bytes, out=m.output_size_in_bytes, alias=m.alias_size_in_bytes,
        temp=m.temp_size_in_bytes, code=m.generated_code_size_in_bytes,
        convs=', '.join(f'{k} x{v}' for k, v in sorted(conv_dtypes(compiled.as_text()).items())))


def memory_report(args) -> None:
    # Analyse the program a GPU runs: grouped depthwise convs (on CPU the model would otherwise use
    # its faster shifted multiply-adds, which keep more temporaries; see efficientvit.DepthwiseConv)
    # (the package re-exports the factory `efficientvit`, so reach the module itself), and XLA's
    # own convolutions, products and optax's Adam with every weight gradient formed, not the CPU's
    # oneDNN calls, fused Adam and factored decoder gradient (1.2 GB fewer temporaries at full size)
    importlib.import_module('gsvit_jax.models.efficientvit').DEPTHWISE_IMPL = 'grouped'
    onednn.CONV_IMPL = 'xla'
    load_before = load_average()
    rows = [compiled_memory(args, name, remat == 'on', b) for name in args.memory_dtypes
            for remat in args.memory_remat for b in args.memory_batch]
    load_after = load_average()

    fits = lambda r: r['total'] / GiB <= MEMORY_BUDGET_GIB  # noqa: E731
    lines = [f'| {r["dtype"]} | {r["remat"]} | {r["batch"]} | {r["convs"]} '
             f'| {r["state"] / GiB:.2f} | {r["args"] / GiB:.2f} | {r["out"] / GiB:.2f} '
             f'| {r["alias"] / GiB:.2f} | {r["temp"] / GiB:.2f} | {r["code"] / GiB:.3f} '
             f'| **{r["total"] / GiB:.2f}** | {"yes" if fits(r) else "no"} | {r["compile"]:.0f} |'
             for r in rows]
    verdicts = []
    for name, remat in ((n, m) for n in args.memory_dtypes for m in args.memory_remat):
        mine = sorted((r for r in rows if r['dtype'] == name and r['remat'] == remat),
                      key=lambda r: r['batch'])
        text = ', '.join(f'batch {r["batch"]}: {r["total"] / GiB:.1f} GiB '
                         f'({"fits" if fits(r) else "does not fit"})' for r in mine)
        if len(mine) >= 2 and mine[-1]['batch'] != mine[0]['batch']:
            per_image = ((mine[-1]['total'] - mine[0]['total'])
                         / (mine[-1]['batch'] - mine[0]['batch']))
            fixed = mine[0]['total'] - per_image * mine[0]['batch']
            if per_image > 0:
                largest = int((MEMORY_BUDGET_GIB * GiB - fixed) // per_image)
                text += (f'; linear fit {fixed / GiB:.2f} GiB + {per_image / 2 ** 20:.0f} MiB per '
                         f'image -> largest batch within {MEMORY_BUDGET_GIB:g} GiB ~{largest}')
        verdicts.append(f'{name}, remat {remat}: {text}.')
    backend = backend_name()
    cpu_note = ('**Backend: CPU.** CPU XLA assigns buffers differently from GPU XLA (other '
                'fusions, no cuDNN convolution algorithms or workspaces, other scheduling), and '
                'CPU XLA computes bfloat16 convolutions in float32 (see the "convolutions" '
                'column), so the bfloat16 rows do not show what bf16 saves on a GPU. Depthwise '
                'convolutions are analysed as grouped convolutions, as a GPU runs them (CPU '
                'training uses shifted multiply-adds: faster there, with other temporaries), and '
                "so are XLA's own convolutions and products and optax's Adam with every weight "
                "gradient formed (CPU training calls oneDNN and a fused Adam that never forms the "
                "decoder's 1.2 GB linear-layer gradient). These "
                'figures are an indication only; run `python benchmarks/pretrain_step.py --memory '
                '--write` on the GPU for the real ones. '
                if backend == 'cpu' else f'**Backend: {backend}.** ')
    table = '\n'.join([
        f'### Pre-training step memory (XLA memory_analysis, compiled, not run) — '
        f'{machine_description()}',
        '',
        f'GSViT {args.variant} encoder + decoder widths {tuple(args.widths)} '
        f'({rows[0]["params"]:,} parameters) at {args.size}x{args.size}, Adam; parameters, moments '
        f'and BatchNorm statistics are float32 in every row (the compute dtype is that of '
        f'activations and convolutions); remat = the encoder\'s blocks and the decoder\'s '
        f'upsampling stages and residual blocks recomputed in the backward pass '
        f'(`gsvit_autoencoder(remat=True)`, the pre-training config\'s default; a custom VJP that '
        f'XLA cannot merge back into the forward pass, see `gsvit_jax.models.remat`); '
        f'train state donated; uint8 BGR batch. Total = arguments + outputs - aliased (the '
        f'donated state reused for the new state) + temporaries + generated code, in GiB; the '
        f'budget is {MEMORY_BUDGET_GIB:g} GiB (a "12 GB" card; the CUDA context takes a few '
        f'hundred MiB of it, and JAX preallocates 75% of the card unless '
        f'`XLA_PYTHON_CLIENT_MEM_FRACTION` says more: 9 GiB by default). Code {code_version()}, jax {jax.__version__}; measured '
        f'{time.strftime("%Y-%m-%d")} with `python benchmarks/pretrain_step.py '
        f'{" ".join(sys.argv[1:])}`; load average {load_before} before, {load_after} after.',
        '',
        '| compute dtype | remat | batch | convolutions (result dtype x count) | train state '
        '| arguments | outputs | aliased | temporaries | generated code | total (GiB) '
        f'| fits {MEMORY_BUDGET_GIB:g} GiB | compile (s) |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
        *lines,
        '',
        cpu_note + ' '.join(verdicts),
    ])
    print(table)
    if args.write:
        update_section('pretrain_memory' + ('' if backend == 'cpu' else f' {backend}'), table)


# ------------------------------------------------------------------------------------ throughput

def torch_models(variant: str, size: int, widths, seed: int = 0):
    """timm encoder + reference decoder with PyTorch's default init; returns (encoder, decoder)."""
    import timm
    import torch
    from torch_gsvit_decoder import ReferenceDecoder
    torch.manual_seed(seed)
    encoder = timm.create_model(f'efficientvit_{variant}', pretrained=False, num_classes=0,
                                img_size=size)
    with torch.no_grad():
        features = encoder.eval().forward_features(torch.zeros(1, 3, size, size))
    decoder = ReferenceDecoder(features[0].numel(), tuple(widths), size // 32)
    return encoder, decoder


def jax_variables_from_torch(model, encoder, decoder) -> dict:
    """The PyTorch modules' weights and BatchNorm statistics as the Flax autoencoder's variables."""
    template = abstract_variables(model)
    encoder_only = {c: template[c]['evit'] for c in ('params', 'batch_stats')}
    encoder_vars = from_torch(encoder.state_dict(), encoder_only, drop_prefixes=('head.',))
    state_dict = {**to_torch({c: {'evit': encoder_vars[c]} for c in encoder_vars}, 'gsvit'),
                  **{'decoder.' + k: v for k, v in decoder.state_dict().items()}}
    return from_torch(state_dict, template)


class TorchTrainer:
    """Eager (or `torch.compile`d) PyTorch train step: L1 on the sigmoid output, Adam."""

    def __init__(self, variant, size, widths, state_dicts, batch, total_steps, compile_model=False,
                 adam='fused', device='cpu'):
        import torch
        encoder, decoder = torch_models(variant, size, widths)
        encoder.load_state_dict(state_dicts[0])
        decoder.load_state_dict(state_dicts[1])
        self.modules = torch.nn.ModuleList([encoder, decoder]).to(device).train()
        forward = lambda x: decoder(encoder.forward_features(x))  # noqa: E731
        self.forward = torch.compile(forward) if compile_model else forward
        self.optimizer = torch.optim.Adam(self.modules.parameters(), lr=1e-3, betas=(0.9, 0.999),
                                          eps=1e-8, **ADAM_IMPLEMENTATIONS[adam])
        end = 1e-5 / 1e-3  # optax.linear_schedule(1e-3, 1e-5, total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: 1 + (end - 1) * min(s, total_steps) / total_steps)
        # uint8 BGR NHWC -> NCHW uint8; scaled to [0, 1] inside the step, as JAX does
        self.frame, self.next_frame = (
            torch.from_numpy(batch[k]).permute(0, 3, 1, 2).contiguous().to(device)
            for k in ('frame', 'next_frame'))

    def step(self) -> float:
        import torch
        self.optimizer.zero_grad(set_to_none=True)
        x = self.frame.float() / 255.0
        target = self.next_frame.float() / 255.0
        loss = torch.nn.functional.l1_loss(self.forward(x), target)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())


def training_batch(batch: int, size: int) -> dict[str, np.ndarray]:
    """Consecutive frames of a procedural surgery-like video, BGR like the data pipeline's."""
    frames = surgical_video(batch + 1, size, size, seed=0)[..., ::-1]
    return {'frame': np.ascontiguousarray(frames[:-1]),
            'next_frame': np.ascontiguousarray(frames[1:])}


def jax_side(setting: dict, total_steps: int) -> dict:
    """Worker: the real JAX train step, compiled, on PyTorch's initial weights (converted)."""
    from report import backend_name, machine_description
    batch_size = setting['batch'] or (8 if jax.devices()[0].platform == 'cpu' else 64)
    encoder, decoder = torch_models(setting['variant'], setting['size'], setting['widths'])
    model, tx, step = jax_step(setting['variant'], setting['size'], setting['widths'],
                               total_steps, remat=setting['remat'])
    state = create_train_state(jax_variables_from_torch(model, encoder, decoder), tx, 0)
    del encoder, decoder
    params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(state.params))
    batch = jax.device_put(training_batch(batch_size, setting['size']))
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    held = {'state': state}
    del state

    def run():
        held['state'], metrics = compiled(held['state'], batch)
        return float(metrics['loss'])  # blocks

    return {'step': run,
            'info': lambda: dict(machine=machine_description(), backend=backend_name(),
                                 version=jax.__version__, batch=batch_size, params=params,
                                 compile=compile_s)}


def torch_side(setting: dict, batch_size: int, total_steps: int, compiled: bool) -> dict:
    """Worker: the PyTorch train step (eager or `torch.compile`d) on the same initial weights."""
    import torch
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cpu':
        torch.set_num_threads(os.cpu_count() or 1)
    encoder, decoder = torch_models(setting['variant'], setting['size'], setting['widths'])
    trainer = TorchTrainer(setting['variant'], setting['size'], setting['widths'],
                           (encoder.state_dict(), decoder.state_dict()),
                           training_batch(batch_size, setting['size']), total_steps, compiled,
                           adam=setting['torch_adam'], device=device)
    del encoder, decoder
    return {'step': trainer.step,
            'info': lambda: dict(version=torch.__version__, device=device,
                                 threads=torch.get_num_threads())}


def throughput(args) -> None:
    """Rounds of: each implementation started in a fresh process, warmed up, timed, closed.

    One process at a time: XLA:CPU allocates a step's temporaries afresh (1-2 GB here) and the
    kernel's cost of providing them grows with the memory another resident process holds (a JAX
    step took 3.1-3.3 s instead of 2.5 s next to an idle process holding 7 GiB), so a comparison
    with both training states resident would measure that, not the frameworks."""
    load_before = load_average()
    total_steps = 1 + args.warmup + args.steps  # each worker's steps
    setting = dict(variant=args.variant, size=args.size, widths=tuple(args.widths),
                   batch=args.batch, remat=args.remat, torch_adam=args.torch_adam)
    names = [JAX_NAME, *([] if args.no_torch else ['PyTorch eager']),
             *(['PyTorch torch.compile'] if args.torch_compile and not args.no_torch else [])]
    rates = {name: [] for name in names}
    first_step, first_loss, last_loss, peaks, compiles = {}, {}, {}, {}, []
    info = torch_info = None
    for r in range(args.rounds):
        for name in names:
            if name == JAX_NAME:
                worker = Worker(jax_side, setting, total_steps)
            else:
                worker = Worker(torch_side, setting, info['batch'], total_steps, 'compile' in name)
            with worker:
                if name == JAX_NAME:
                    info = worker.call('info')
                    compiles.append(info['compile'])
                elif torch_info is None:
                    torch_info = worker.call('info')
                (first_step[name], first_loss[name]), *_ = worker.timed('step', 1 + args.warmup)
                steps = worker.timed('step', args.steps)
                last_loss[name] = steps[-1][1]
                rates[name].append(args.steps * info['batch'] / sum(s for s, _ in steps))
                peaks[name] = max(peaks.get(name, 0.0), worker.peak_rss_gib())
        print(f'round {r + 1}/{args.rounds}: '
              + ', '.join(f'{n} {v[-1]:.2f} img/s' for n, v in rates.items()), flush=True)
    load_after = load_average()
    info['compile'] = statistics.median(compiles)
    batch_size = info['batch']
    peaks = ', '.join(f'{name} {peak:.1f}' for name, peak in peaks.items())

    jax_rate = statistics.median(rates[JAX_NAME])
    rows = []
    for name in names:
        rate = statistics.median(rates[name])
        compile_s = f'{info["compile"]:.1f}' if name == JAX_NAME else (
            f'{first_step[name]:.1f} (first step)' if 'compile' in name else '–')
        rows.append(f'| {name} | {rate:.2f} | {jax_rate / rate:.2f}x | {compile_s} '
                    f'| {first_loss[name]:.4f} | {last_loss[name]:.4f} |')
    widths = tuple(args.widths)
    torch_text = ('torch not timed (--no-torch)' if torch_info is None else
                  f'torch {torch_info["version"]} on {torch_info["device"]}, torch threads '
                  f'{torch_info["threads"]}, `torch.optim.Adam` {args.torch_adam}')
    table = '\n'.join([
        f'### Pre-training train step (GSViT {args.variant} + decoder {widths}, fp32, '
        f'{args.size}x{args.size}, batch {batch_size}) — {info["machine"]}',
        '',
        f'{info["params"]:,} parameters; JAX remat {"on" if args.remat else "off"}; forward + '
        f'backward + Adam (GSViT recipe: L1 on the sigmoid '
        f'output, lr 1e-3 -> 1e-5 linear), BatchNorm in train mode, same initial weights and '
        f'uint8 batch (consecutive frames of `synthetic.surgical_video`) in both. Code '
        f'{code_version()}, jax {info["version"]}, {torch_text}; median of {args.rounds} rounds; '
        f'in each round every implementation runs alone in a fresh process (`benchmarks/workers.py`; '
        f'JAX compiles again: compile time is the median) for 1 + {args.warmup} warm-up steps and '
        f'{args.steps} timed steps. Losses: first step and last timed step (step '
        f'{1 + args.warmup + args.steps}). Peak RSS per process (GiB): {peaks}. Load average (1, 5, 15 min) {load_before} before, '
        f'{load_after} after. Measured {time.strftime("%Y-%m-%d")} with '
        f'`python benchmarks/pretrain_step.py {" ".join(sys.argv[1:])}`.',
        '',
        '| implementation | img/s | JAX speed-up vs this | compile (s) | first loss | last loss |',
        '|---|---|---|---|---|---|',
        *rows,
    ])
    print(table)
    if args.write:
        update_section('pretrain_step ' + info['backend'], table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--variant', default='m5', help='EfficientViT encoder variant')
    parser.add_argument('--size', type=int, default=224, help='image side (multiple of 32)')
    parser.add_argument('--widths', type=int, nargs=5, default=list(DEFAULT_WIDTHS))
    parser.add_argument('--batch', type=int, default=None,
                        help='default 8 on CPU, 64 on an accelerator (16 with --small)')
    parser.add_argument('--small', action='store_true',
                        help=f'quick preset: {SMALL} (flags given explicitly still win)')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--steps', type=int, default=2, help='timed steps per round')
    parser.add_argument('--warmup', type=int, default=1, help='untimed steps after the first')
    parser.add_argument('--torch-compile', action='store_true', help='add a torch.compile copy')
    parser.add_argument('--no-torch', action='store_true',
                        help='time JAX only (PyTorch still provides the initial weights)')
    parser.add_argument('--torch-adam', default='fused', choices=sorted(ADAM_IMPLEMENTATIONS),
                        help='torch.optim.Adam implementation (default: fused)')
    parser.add_argument('--memory', action='store_true', help='compile-only memory report')
    parser.add_argument('--memory-batch', type=int, nargs='+', default=[100],
                        help='batch sizes to compile (two or more: per-image fit, largest batch)')
    parser.add_argument('--remat', action='store_true',
                        help='JAX: recompute activations in the backward pass (gsvit_jax.models.remat)')
    parser.add_argument('--memory-remat', nargs='+', default=['off', 'on'], choices=['off', 'on'])
    parser.add_argument('--memory-dtypes', nargs='+', default=['float32', 'bfloat16'],
                        choices=['float32', 'bfloat16'])
    parser.add_argument('--write', action='store_true', help='update benchmarks/RESULTS.md')
    args = parser.parse_args()
    if args.small:
        given = set(a.split('=')[0] for a in sys.argv[1:])
        for key, value in SMALL.items():
            if f'--{key}' not in given:
                setattr(args, key, value)
    if args.memory:
        if args.batch is None:
            args.batch = 8 if jax.devices()[0].platform == 'cpu' else 64
        memory_report(args)
    else:
        throughput(args)


if __name__ == '__main__':
    main()
