"""Live phase recognition cost per second of video: frozen GSViT encoder + head, batch 1.

    python benchmarks/phase_online.py [--repeats 30] [--write]

At 1 fps a prediction is due every 1000 ms. Times (median of `--repeats` jitted calls after
warm-up): the M5 encoder on one 224x224 frame (as trained, and with BatchNorm folded), the paper's
MLP head, and one online step of the causal TCN measured early (t = 10 s) and late (t = 3000 s)
in a video, to show its cost does not grow with the video's length. Also: the feature cache's
encoding rate (batch 64) and one full causal TCN pass over an hour of latents. Random weights:
the cost does not depend on their values. `--write` stores the table in benchmarks/RESULTS.md.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import (backend_name, code_version, load_average, machine_description,  # noqa: E402
                    update_section)

from gsvit_jax.models import fold_batchnorm, gsvit_encoder  # noqa: E402
from gsvit_jax.models.phase_head import PhaseHead  # noqa: E402
from gsvit_jax.models.temporal import CausalTCN  # noqa: E402
from gsvit_jax.phase.encoder import encode  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--write', action='store_true')
    args = parser.parse_args()
    before = load_average()
    rng = np.random.default_rng(0)
    frame = jnp.asarray(rng.integers(0, 256, (1, 224, 224, 3), np.uint8))
    frames64 = jnp.asarray(rng.integers(0, 256, (64, 224, 224, 3), np.uint8))

    encoder = gsvit_encoder()
    variables = jax.jit(encoder.init)(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    run_encoder = jax.jit(lambda v, x: encode(encoder, v, x))
    fused = gsvit_encoder(fused=True)
    folded = fold_batchnorm(variables)
    run_fused = jax.jit(lambda v, x: fused.apply(v, x.astype(jnp.float32) / 255.0))

    head = PhaseHead()
    head_vars = head.init(jax.random.key(1), jnp.zeros((1, 6144)))
    run_head = jax.jit(head.apply)
    latent = run_encoder(variables, frame)

    tcn = CausalTCN()
    tcn_vars = tcn.init(jax.random.key(2), jnp.zeros((1, 8, 6144)))
    step = jax.jit(lambda v, x, h: tcn.apply(v, x, h, method=CausalTCN.step))
    histories = tcn.initial_histories(1)
    rows = {}
    for t in range(3000):
        if t == 10:
            rows['causal TCN online step, t = 10 s'] = median_ms(
                lambda: step(tcn_vars, latent, histories), args.repeats)
        _, histories = step(tcn_vars, latent, histories)
    rows['causal TCN online step, t = 3000 s'] = median_ms(
        lambda: step(tcn_vars, latent, histories), args.repeats)
    rows['encoder (M5, 224x224, as trained)'] = median_ms(
        lambda: run_encoder(variables, frame), args.repeats)
    rows['encoder, BatchNorm folded'] = median_ms(lambda: run_fused(folded, frame), args.repeats)
    rows['paper MLP head (6144 -> 2048 -> 512 -> 7)'] = median_ms(
        lambda: run_head(head_vars, latent), args.repeats)
    hour = jnp.asarray(rng.normal(size=(1, 3600, 6144)).astype(np.float32))
    full_pass = jax.jit(tcn.apply)
    hour_ms = median_ms(lambda: full_pass(tcn_vars, hour), max(3, args.repeats // 10))
    cache_ms = median_ms(lambda: run_encoder(variables, frames64), max(3, args.repeats // 10))

    live_mlp = rows['encoder (M5, 224x224, as trained)'] + rows[
        'paper MLP head (6144 -> 2048 -> 512 -> 7)']
    live_tcn = rows['encoder (M5, 224x224, as trained)'] + rows[
        'causal TCN online step, t = 3000 s']
    lines = [
        f'### Live phase recognition, batch 1 — {machine_description()}', '',
        f'jax {jax.__version__}; median of {args.repeats} jitted calls after warm-up, random '
        f'weights; code {code_version()}; load average {before} before, {load_average()} after. '
        'Measured with `python benchmarks/phase_online.py --write`. At 1 fps each prediction '
        'has a 1000 ms budget.', '',
        '| stage | ms per second of video | share of the 1000 ms budget |', '|---|---|---|']
    lines += [f'| {name} | {ms:.2f} | {ms / 10:.2f}% |' for name, ms in rows.items()]
    lines += [f'| **live total, encoder + MLP head** | **{live_mlp:.1f}** | '
              f'{live_mlp / 10:.1f}% |',
              f'| **live total, encoder + causal TCN** | **{live_tcn:.1f}** | '
              f'{live_tcn / 10:.1f}% |',
              '', f'Feature cache encoding (batch 64): {64e3 / cache_ms:.0f} frames/s '
              f'(Cholec80 at 1 fps, ~184.5k frames: ~{184.5 * cache_ms / 64:.0f} s of encoding). '
              f'One causal TCN pass over 3600 s of latents (training / offline evaluation): '
              f'{hour_ms:.0f} ms.']
    table = '\n'.join(lines)
    print(table)
    if args.write:
        update_section(f'phase_online {backend_name()}', table)


if __name__ == '__main__':
    main()
