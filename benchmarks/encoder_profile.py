"""Where the encoder's time goes: every part of GSViT (EfficientViT-M5), JAX next to PyTorch.

    python benchmarks/encoder_profile.py [--batch 64] [--rounds 3] [--torch-compile] [--write]

Each part (patch embed; per stage the subsample's depthwise / FFN / patch merging, and each block's
dw0, ffn0, mixer (attention), dw1, ffn1) runs alone on an input of its real shape: JAX jitted with
folded BatchNorm, PyTorch as timm's own sub-module (eager, optionally torch.compile'd), each
framework in its own process (`workers.py`). Same weights; measurements interleaved round by round. The table sums parts by kind and stage; the
"whole encoder" row is one program, so the gap to the sum shows what crossing part boundaries costs
(or saves). `--write` stores it in benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time
from typing import Callable

import jax
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from encoder_inference import timm_encoder  # noqa: E402
from report import code_version, load_average, machine_description, update_section  # noqa: E402
from workers import Worker  # noqa: E402

from gsvit_jax.convert import abstract_variables, from_torch  # noqa: E402
from gsvit_jax.models import fold_batchnorm, gsvit_encoder  # noqa: E402
from gsvit_jax.models.efficientvit import (  # noqa: E402
    FFN, VARIANTS, ConvBN, LocalWindowAttention, PatchEmbed, PatchMerging, stage_resolutions)


def jax_parts(params: dict, batch: int) -> list[tuple[str, str, tuple, Callable]]:
    """(stage, kind, NHWC input shape, fn(params, x)) for every part of M5, in forward order; fn
    takes the part's own parameter subtree."""
    v, kd = VARIANTS['m5'], 16
    res = stage_resolutions(224)
    parts = []

    def add(stage, kind, shape, module, path, residual=True):
        sub = params
        for key in path:
            sub = sub[key]
        apply = (lambda p, x: x + module.apply({'params': p}, x)) if residual else (
            lambda p, x: module.apply({'params': p}, x))
        parts.append((stage, kind, (batch, *shape), jax.jit(apply), sub))

    def dw(dim):
        return ConvBN(dim, 3, padding=1, groups=dim, fused=True)

    add('patch embed', 'patch embed', (224, 224, 3), PatchEmbed(v.embed_dim[0], fused=True),
        ['patch_embed'], residual=False)
    for i in range(3):
        dim, name, r = v.embed_dim[i], f'blocks{i + 1}', res[i]
        stage = f'stage {i + 1}'
        first = 0
        if i > 0:
            prev, r_in = v.embed_dim[i - 1], res[i - 1]
            add(stage, 'depthwise', (r_in, r_in, prev), dw(prev), [name, '0', '0', 'm'])
            add(stage, 'FFN', (r_in, r_in, prev), FFN(prev, 2 * prev, fused=True),
                [name, '0', '1', 'm'])
            add(stage, 'patch merging', (r_in, r_in, prev), PatchMerging(prev, dim, fused=True),
                [name, '1'], residual=False)
            add(stage, 'depthwise', (r, r, dim), dw(dim), [name, '2', '0', 'm'])
            add(stage, 'FFN', (r, r, dim), FFN(dim, 2 * dim, fused=True), [name, '2', '1', 'm'])
            first = 3
        attention = LocalWindowAttention(dim, kd, v.num_heads[i], dim / (kd * v.num_heads[i]), r,
                                         7, v.kernels, fused=True)
        for j in range(first, first + v.depth[i]):
            add(stage, 'depthwise', (r, r, dim), dw(dim), [name, str(j), 'dw0', 'm'])
            add(stage, 'FFN', (r, r, dim), FFN(dim, 2 * dim, fused=True), [name, str(j), 'ffn0', 'm'])
            add(stage, 'attention', (r, r, dim), attention, [name, str(j), 'mixer', 'm'])
            add(stage, 'depthwise', (r, r, dim), dw(dim), [name, str(j), 'dw1', 'm'])
            add(stage, 'FFN', (r, r, dim), FFN(dim, 2 * dim, fused=True), [name, str(j), 'ffn1', 'm'])
    return parts


def torch_parts(model: torch.nn.Module) -> list[torch.nn.Module]:
    """timm's sub-modules in the order of `jax_parts` (residual wrappers included)."""
    parts = [model.patch_embed]
    for i, stage in enumerate(model.stages):
        if i > 0:
            d = stage.downsample
            parts += [d.res1[0], d.res1[1], d.patchmerge, d.res2[0], d.res2[1]]
        for block in stage.blocks:
            parts += [block.dw0, block.ffn0, block.mixer, block.dw1, block.ffn1]
    return parts


def part_input(k: int, shape: tuple) -> np.ndarray:
    """Part k's input (NHWC), the same in every worker."""
    return np.random.default_rng(k).standard_normal(shape).astype(np.float32)


def jax_side(batch: int) -> dict:
    """Worker: every part and the whole encoder, jitted, on timm's weights (folded)."""
    model = timm_encoder('cpu').eval()
    variables = from_torch(model.state_dict(), abstract_variables(gsvit_encoder()),
                           drop_prefixes=('head.',))
    params = jax.device_put(fold_batchnorm(variables))['params']
    parts = jax_parts(params, batch)
    inputs = [jax.device_put(part_input(k, shape)) for k, (_, _, shape, _, _) in enumerate(parts)]
    whole = jax.jit(gsvit_encoder(fused=True).apply)
    x = jax.device_put(np.random.default_rng(0).uniform(size=(batch, 224, 224, 3))
                       .astype(np.float32))

    def run(k):
        _, _, _, fn, sub = parts[k]
        fn(sub, inputs[k]).block_until_ready()

    def run_whole():
        whole({'params': params}, x).block_until_ready()

    return {'parts': lambda: [(stage, kind, shape) for stage, kind, shape, _, _ in parts],
            'part': run,
            'output': lambda k: np.asarray(parts[k][3](parts[k][4], inputs[k])),
            'whole': run_whole,
            'info': lambda: dict(machine=machine_description(), version=jax.__version__)}


def torch_side(batch: int, compiled: bool) -> dict:
    """Worker: timm's sub-modules in `jax_parts` order and the whole encoder, eager or compiled."""
    torch.set_num_threads(os.cpu_count() or 1)
    model = timm_encoder('cpu').eval()
    modules = torch_parts(model)
    whole = model.forward_features
    if compiled:
        modules, whole = [torch.compile(m) for m in modules], torch.compile(whole)
    x = np.random.default_rng(0).uniform(size=(batch, 224, 224, 3)).astype(np.float32)
    x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    shapes = {}

    def nchw(k, shape):
        if k not in shapes:
            shapes[k] = torch.from_numpy(part_input(k, shape).transpose(0, 3, 1, 2).copy())
        return shapes[k]

    def call(module, xt):
        with torch.inference_mode():
            return module(xt)

    return {'part': lambda k, shape: call(modules[k], nchw(k, shape)) is None,
            'output': lambda k, shape: call(modules[k], nchw(k, shape)).numpy()
            .transpose(0, 2, 3, 1),
            'whole': lambda: call(whole, x) is None,
            'info': lambda: dict(version=torch.__version__, threads=torch.get_num_threads(),
                                 parts=len(modules))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--torch-compile', action='store_true',
                        help='also time each part torch.compile\'d (slow to compile)')
    parser.add_argument('--write', action='store_true', help='update benchmarks/RESULTS.md')
    args = parser.parse_args()
    before = load_average()
    workers = {'JAX': Worker(jax_side, args.batch)}
    try:
        workers['PyTorch eager'] = Worker(torch_side, args.batch, False)
        if args.torch_compile:
            workers['torch.compile'] = Worker(torch_side, args.batch, True)
        report(args, workers, before)
    finally:
        for worker in workers.values():
            worker.close()


def report(args, workers: dict[str, Worker], before: str) -> None:
    parts = workers['JAX'].call('parts')
    info, torch_info = workers['JAX'].call('info'), workers['PyTorch eager'].call('info')
    assert torch_info['parts'] == len(parts), (torch_info['parts'], len(parts))
    worst = 0.0
    for k, (_, _, shape) in enumerate(parts):
        out_j = workers['JAX'].call('output', k)
        out_t = workers['PyTorch eager'].call('output', k, shape)
        worst = max(worst, float(np.abs(out_j - out_t).max() / (np.abs(out_t).max() + 1e-6)))
    impls = list(workers)

    def part_args(name, k):
        return (k,) if name == 'JAX' else (k, parts[k][2])

    times = {name: [[] for _ in parts] for name in impls}
    whole_times = {name: [] for name in impls}
    for r in range(args.rounds):
        for name, worker in workers.items():
            for k in range(len(parts)):
                calls = worker.timed('part', 1 + args.repeats, *part_args(name, k))[1:]
                times[name][k].append(1e3 * statistics.median(s for s, _ in calls))
            calls = worker.timed('whole', 1 + args.repeats)[1:]
            whole_times[name].append(1e3 * statistics.median(s for s, _ in calls))
        print(f'round {r + 1}/{args.rounds} done', flush=True)
    ms = {name: [statistics.median(t) for t in times[name]] for name in impls}

    groups: dict[tuple[str, str], dict[str, float]] = collections.defaultdict(
        lambda: collections.defaultdict(float))
    for k, (stage, kind, *_rest) in enumerate(parts):
        for name in impls:
            groups[(stage, kind)][name] += ms[name][k]
    header = ' | '.join(f'{name} (ms)' for name in impls)
    rows = []
    for (stage, kind), by in groups.items():
        ratio = by['PyTorch eager'] / by['JAX']
        rows.append(f'| {stage} | {kind} | ' + ' | '.join(f'{by[n]:.1f}' for n in impls)
                    + f' | {ratio:.2f}x |')
    totals = {n: sum(ms[n]) for n in impls}
    kinds = collections.defaultdict(lambda: collections.defaultdict(float))
    for (stage, kind), by in groups.items():
        for n in impls:
            kinds[kind][n] += by[n]
    for kind, by in kinds.items():
        rows.append(f'| all | **{kind}** | ' + ' | '.join(f'{by[n]:.1f}' for n in impls)
                    + f' | {by["PyTorch eager"] / by["JAX"]:.2f}x |')
    rows.append('| all | **sum of parts** | ' + ' | '.join(f'{totals[n]:.1f}' for n in impls)
                + f' | {totals["PyTorch eager"] / totals["JAX"]:.2f}x |')
    whole_ms = {n: statistics.median(whole_times[n]) for n in impls}
    rows.append('| all | **whole encoder, one call** | '
                + ' | '.join(f'{whole_ms[n]:.1f}' for n in impls)
                + f' | {whole_ms["PyTorch eager"] / whole_ms["JAX"]:.2f}x |')
    table = '\n'.join([
        f'### Encoder profile by part (GSViT M5, fp32, batch {args.batch}, 224x224) — '
        f'{info["machine"]}',
        '',
        f'Each part run alone on an input of its real shape (JAX: jitted, BatchNorm folded; '
        f'PyTorch: the timm sub-module, inference mode, {torch_info["threads"]} threads), each '
        f'framework in its own process (`benchmarks/workers.py`), median of {args.repeats} calls '
        f'per round after one untimed, median of {args.rounds} interleaved rounds, '
        f'summed by stage and kind. Largest part output difference JAX vs PyTorch '
        f'{worst:.1e} (relative to the output\'s max). Code {code_version()}, jax '
        f'{info["version"]}, torch {torch_info["version"]}; load average {before} before, '
        f'{load_average()} after. Measured {time.strftime("%Y-%m-%d")} with '
        f'`python benchmarks/encoder_profile.py{" --torch-compile" if args.torch_compile else ""} '
        f'--write`.',
        '',
        f'| stage | part | {header} | JAX speed-up vs eager |',
        '|---|---|' + '---|' * len(impls) + '---|',
        *rows,
    ])
    print(table)
    if args.write:
        update_section('encoder_profile cpu', table)


if __name__ == '__main__':
    main()
