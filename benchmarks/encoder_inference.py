"""GSViT encoder inference: JAX (jit, BatchNorm folded) vs timm PyTorch (eager, torch.compile).

    python benchmarks/encoder_inference.py [--rounds 3] [--batch 64] [--no-compile] [--write]

Same M5 weights and inputs in every implementation; measurements are interleaved round by round so
machine noise hits all of them alike. Reports batch-1 latency (median ms) and batch-N throughput
(img/s), the JAX/PyTorch ratio, and checks that the outputs agree. `--write` stores the table in
benchmarks/RESULTS.md under this machine's description.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from report import machine_description, update_section  # noqa: E402

from gsvit_jax.convert import abstract_variables, from_torch  # noqa: E402
from gsvit_jax.convert.torch_random import randomize_  # noqa: E402
from gsvit_jax.models import fold_batchnorm, gsvit_encoder  # noqa: E402


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
    parser.add_argument('--write', action='store_true', help='update benchmarks/RESULTS.md')
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    device = 'cuda' if cuda else 'cpu'
    if not cuda:
        torch.set_num_threads(os.cpu_count() or 1)
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    torch_model = timm_encoder(device)
    state_dict = {k: v.cpu() for k, v in torch_model.state_dict().items()}
    variables = from_torch(state_dict, abstract_variables(gsvit_encoder()), drop_prefixes=('head.',))
    folded = jax.device_put(fold_batchnorm(variables))
    jax_fused = jax.jit(gsvit_encoder(fused=True).apply)

    rng = np.random.default_rng(0)
    inputs = {b: rng.uniform(size=(b, 224, 224, 3)).astype(np.float32) for b in (1, args.batch)}
    jax_inputs = {b: jax.device_put(x) for b, x in inputs.items()}
    torch_inputs = {b: torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(device)
                    for b, x in inputs.items()}

    def run_jax(b):
        return jax_fused(folded, jax_inputs[b]).block_until_ready()

    def torch_runner(model):
        def run(b):
            with torch.inference_mode():
                out = model(torch_inputs[b])
            sync()
            return out
        return run

    impls = {'JAX jit, folded BN': run_jax,
             'PyTorch eager (timm)': torch_runner(torch_model.forward_features)}
    if not args.no_compile:
        try:
            compiled = torch.compile(torch_model.forward_features)
            torch_runner(compiled)(1)
            impls['PyTorch torch.compile (timm)'] = torch_runner(compiled)
        except Exception as e:  # noqa: BLE001 - reported, the benchmark goes on without it
            print(f'torch.compile unavailable: {type(e).__name__}: {e}'.splitlines()[0])

    reference = torch_runner(torch_model.forward_features)(args.batch).cpu().numpy()
    agreement = {}
    for name, run in impls.items():  # warm-up/compile both shapes, check agreement
        run(1)
        out = run(args.batch)
        out = np.asarray(out.cpu()).transpose(0, 2, 3, 1) if torch.is_tensor(out) else np.asarray(out)
        agreement[name] = float(np.abs(out - reference.transpose(0, 2, 3, 1)).max())

    latency = {name: [] for name in impls}
    throughput = {name: [] for name in impls}
    for r in range(args.rounds):
        for name, run in impls.items():
            latency[name].append(1e3 * seconds_per_call(lambda: run(1), args.latency_repeats))
            secs = seconds_per_call(lambda: run(args.batch), args.throughput_repeats)
            throughput[name].append(args.batch / secs)
        print(f'round {r + 1}/{args.rounds} done', flush=True)

    rows = []
    eager = statistics.median(throughput['PyTorch eager (timm)'])
    eager_lat = statistics.median(latency['PyTorch eager (timm)'])
    for name in impls:
        lat, thr = statistics.median(latency[name]), statistics.median(throughput[name])
        rows.append(f'| {name} | {lat:.1f} | {thr:.1f} | {eager_lat / lat:.2f}x | {thr / eager:.2f}x '
                    f'| {agreement[name]:.1e} |')
    machine = machine_description()
    table = '\n'.join([
        f'### Encoder inference (GSViT / EfficientViT-M5, fp32, 224x224) — {machine}',
        '',
        f'jax {jax.__version__}, torch {torch.__version__}, torch threads {torch.get_num_threads()}; '
        f'median of {args.rounds} interleaved rounds; latency = median of {args.latency_repeats} '
        f'batch-1 calls, throughput = median of {args.throughput_repeats} batch-{args.batch} calls. '
        f'Measured {time.strftime("%Y-%m-%d")} with `python benchmarks/encoder_inference.py --write`.',
        '',
        f'| implementation | batch-1 latency (ms) | batch-{args.batch} throughput (img/s) '
        '| latency speed-up vs eager | throughput vs eager | max abs diff vs eager |',
        '|---|---|---|---|---|---|',
        *rows,
    ])
    print(table)
    if args.write:
        key = 'encoder_inference ' + ('gpu ' + jax.devices()[0].device_kind if cuda else 'cpu')
        update_section(key, table)


if __name__ == '__main__':
    main()
