"""The patch embedding's stride-2 3x3 convolutions (GSViT M5, batch 64): the project's oneDNN kernel
and every formulation XLA:CPU can be given, next to PyTorch's kernels. This is the benchmark behind
the patch-embed choice.

    python benchmarks/strided_conv.py [--batch 64] [--rounds 3] [--write]

JAX formulations (same result to float rounding): oneDNN's convolution through `jax.ffi`
(`gsvit_jax.kernels.onednn.conv2d`, what the model uses on CPU where it builds); XLA's convolution
NHWC and NCHW; im2col (9 strided slices concatenated, one dot); space-to-depth (a stride-1 2x2
convolution, or 4 dots, on the 2x2-folded input). The XLA convolution is also timed under XLA flags
that route convolutions elsewhere (each in its own process: flags are read once). PyTorch: eager
conv2d on NCHW and on channels-last tensors (oneDNN). `--write` stores the table in
benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from report import code_version, load_average, machine_description, update_section  # noqa: E402

from gsvit_jax import host_memory  # noqa: E402

# (input side, in channels, out channels) of M5's patch embedding at 224x224
SHAPES = ((224, 3, 24), (112, 24, 48), (56, 48, 96), (28, 96, 192))
XLA = 'XLA conv NHWC'
ONEDNN = 'oneDNN conv through jax.ffi'
FLAGS = ('--xla_cpu_use_onednn=true',
         '--xla_cpu_experimental_ynn_fusion_type=individual_dot,individual_convolution',
         '--xla_cpu_experimental_xnn_fusion_type=individual_dot,individual_convolution')


def jax_formulations() -> dict[str, Callable]:
    import jax
    import jax.numpy as jnp
    from gsvit_jax.kernels import onednn

    def conv(x, w, layout=('NHWC', 'HWIO', 'NHWC')):
        return jax.lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)),
                                            dimension_numbers=layout)

    def nchw(x, w):  # transposes included: the model is channels-last
        y = conv(jnp.transpose(x, (0, 3, 1, 2)), jnp.transpose(w, (3, 2, 0, 1)),
                 ('NCHW', 'OIHW', 'NCHW'))
        return jnp.transpose(y, (0, 2, 3, 1))

    def strided(x, i, j, side):
        return x[:, i:i + 2 * (side - 1) + 1:2, j:j + 2 * (side - 1) + 1:2]

    def im2col(x, w):
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        side = (xp.shape[1] - 3) // 2 + 1
        cols = jnp.concatenate([strided(xp, i, j, side) for i in range(3) for j in range(3)], -1)
        return cols @ w.reshape(-1, w.shape[-1])

    def space_to_depth(x, w):
        """2x2 blocks of the padded input as channels; the 3x3 kernel zero-padded to 4x4 and
        folded the same way: a stride-1 2x2 problem."""
        b, h, _, c = x.shape
        half = (h + 2) // 2
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        s = xp.reshape(b, half, 2, half, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(
            b, half, half, 4 * c)
        w4 = jnp.pad(w, ((0, 1), (0, 1), (0, 0), (0, 0))).reshape(2, 2, 2, 2, c, -1)
        return s, w4.transpose(0, 2, 1, 3, 4, 5).reshape(2, 2, 4 * c, -1)

    def s2d_conv(x, w):
        s, w4 = space_to_depth(x, w)
        return jax.lax.conv_general_dilated(s, w4, (1, 1), 'VALID',
                                            dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

    def s2d_dots(x, w):
        s, w4 = space_to_depth(x, w)
        side = s.shape[1] - 1
        return sum(s[:, a:a + side, b:b + side] @ w4[a, b] for a in range(2) for b in range(2))

    forms = {'XLA conv NHWC': conv, 'XLA conv NCHW': nchw, 'im2col + dot': im2col,
             'space-to-depth conv': s2d_conv, 'space-to-depth 4 dots': s2d_dots}
    if onednn.use_onednn(jnp.float32):
        forms = {ONEDNN: lambda x, w: onednn.conv2d(x, w, stride=2, padding=1), **forms}
    return forms


def median_ms(fn: Callable, block: Callable, calls: int) -> float:
    block(fn())
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def inputs(batch: int, side: int, cin: int, cout: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(side)
    return (rng.standard_normal((batch, side, side, cin), np.float32),
            (rng.standard_normal((3, 3, cin, cout)) / np.sqrt(9 * cin)).astype(np.float32))


def time_jax(batch: int, calls: int, only: str | None = None) -> dict[str, list[tuple[float, float]]]:
    """name -> per shape (ms, max abs difference to XLA's NHWC convolution)."""
    import jax
    import jax.numpy as jnp
    results: dict[str, list[tuple[float, float]]] = {}
    forms = jax_formulations()
    for side, cin, cout in SHAPES:
        x, w = (jnp.asarray(a) for a in inputs(batch, side, cin, cout))
        reference = np.asarray(jax.jit(forms[XLA])(x, w))
        for name, form in forms.items():
            if only and name != only:
                continue
            fn = jax.jit(form)
            diff = float(np.abs(np.asarray(fn(x, w)) - reference).max())
            ms = median_ms(lambda: fn(x, w), jax.block_until_ready, calls)
            results.setdefault(name, []).append((ms, diff))
    return results


def time_torch(batch: int, calls: int) -> dict[str, list[tuple[float, float]]]:
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
    results: dict[str, list[tuple[float, float]]] = {}
    for side, cin, cout in SHAPES:
        x, w = inputs(batch, side, cin, cout)
        tx = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        tw = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous()
        for name, fmt in (('PyTorch eager NCHW', torch.contiguous_format),
                          ('PyTorch eager channels-last (oneDNN)', torch.channels_last)):
            a, b = tx.contiguous(memory_format=fmt), tw.contiguous(memory_format=fmt)
            with torch.inference_mode():
                def run():
                    return torch.nn.functional.conv2d(a, b, stride=2, padding=1)
                ms = median_ms(run, lambda y: None, calls)
            results.setdefault(name, []).append((ms, float('nan')))
    return results


def time_flag(flag: str, batch: int, calls: int) -> list[tuple[float, float]]:
    """XLA's NHWC convolution in a child process started with `flag`."""
    env = {**os.environ, 'XLA_FLAGS': f'{os.environ.get("XLA_FLAGS", "")} {flag}'.strip()}
    out = subprocess.run([sys.executable, __file__, '--child', '--batch', str(batch),
                          '--calls', str(calls)], env=env, capture_output=True, text=True,
                         check=True)
    return [tuple(r) for r in json.loads(out.stdout.strip().splitlines()[-1])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--calls', type=int, default=3)
    parser.add_argument('--write', action='store_true')
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    host_memory.reexec_with_huge_pages()  # as the other benchmarks' workers (`workers.py`)
    if args.child:
        print(json.dumps(time_jax(args.batch, args.calls, XLA)[XLA]))
        return
    before = load_average()
    rounds = []
    for _ in range(args.rounds):  # interleaved: each round times everything once
        r = {**time_jax(args.batch, args.calls), **time_torch(args.batch, args.calls)}
        for flag in FLAGS:
            r[f'XLA conv NHWC, `{flag}`'] = time_flag(flag, args.batch, args.calls)
        rounds.append(r)
    names = list(rounds[0])
    ms = {n: [statistics.median(r[n][i][0] for r in rounds) for i in range(len(SHAPES))]
          for n in names}
    diff = {n: max(r[n][i][1] for r in rounds for i in range(len(SHAPES))) for n in names}
    flops = [2 * args.batch * (s // 2) ** 2 * cin * cout * 9 for s, cin, cout in SHAPES]
    model = ONEDNN if ONEDNN in ms else XLA
    base = sum(ms[model])
    head = ' | '.join(f'{s}² {cin}→{cout} (ms)' for s, cin, cout in SHAPES)
    lines = [
        f'### Patch embedding\'s stride-2 3x3 convolutions, formulations (batch {args.batch}, '
        f'fp32) — {machine_description()}', '',
        f'Each convolution alone on random input of its real shape (M5 at 224x224), with the '
        f'huge-page malloc tunable (`gsvit_jax.host_memory`); median of '
        f'{args.calls} calls per round, median of {args.rounds} interleaved rounds; GFLOP/s over '
        f'all four ({sum(flops) / 1e9:.1f} GFLOP). Code {code_version()}; load average '
        f'{before} before, {load_average()} after. Measured {time.strftime("%Y-%m-%d")} with '
        '`python benchmarks/strided_conv.py --write`.', '',
        f'| formulation | {head} | total (ms) | GFLOP/s | vs model | max abs diff |',
        '|---|' + '---|' * (len(SHAPES) + 4)]
    for n in names:
        total = sum(ms[n])
        d = '–' if np.isnan(diff[n]) else f'{diff[n]:.0e}'
        label = f'{n} (model)' if n == model else n
        lines.append(f'| {label} | ' + ' | '.join(f'{m:.0f}' for m in ms[n]) +
                     f' | {total:.0f} | {sum(flops) / total / 1e6:.0f} | {base / total:.2f}x | {d} |')
    xla_names = [n for n in names if not n.startswith(('PyTorch', ONEDNN))]
    best = min(xla_names, key=lambda n: sum(ms[n]))
    torch_onednn = sum(ms['PyTorch eager channels-last (oneDNN)'])
    lines += ['', f'The model\'s formulation, {model}, takes {base:.0f} ms; the fastest of XLA\'s '
              f'own, {best}, {sum(ms[best]):.0f} ms ({sum(ms[best]) / base:.2f}x the model\'s '
              f'time); PyTorch\'s oneDNN on channels-last tensors {torch_onednn:.0f} ms '
              f'({torch_onednn / base:.2f}x).']
    table = '\n'.join(lines)
    print(table)
    if args.write:
        update_section('strided_conv cpu', table)


if __name__ == '__main__':
    main()
