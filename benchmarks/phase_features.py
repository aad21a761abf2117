"""Phase feature cache: frames/s of `build_feature_cache` with the frozen M5 encoder at 224 px, end
to end and the encoder alone, and the time that implies for all of Cholec80 (~184.5k frames).

    python benchmarks/phase_features.py [--videos 4] [--seconds 120] [--batch 256] [--workers 0]
                                        [--rounds 3] [--workdir DIR] [--quick] [--write]

Generates a Cholec80-layout dataset (`build_demo_cholec80`: phase-tinted 25-fps videos through the
real `cholec80` builder, 1 frame per second stored as JPEG) and builds its feature cache as phase
training does: `make_encode_fn` over this process's devices, Grain decoding the JPEGs with each
`--workers` count, `--dtype` latents, one .npz per video, into a fresh directory every time (a
complete cache would be reused, not rebuilt). "Encoder alone" calls the same `encode_fn` on as many
frames already decoded in memory, in the same batches: the gap is what reading, decoding and writing
cost. Random weights (the cost does not depend on their values); one untimed build first compiles
every batch shape; median of `--rounds` interleaved rounds. The data lives in a temporary directory
(kept in `--workdir`). `--quick`: m0 at 64 px on a few frames, a smoke test. `--write` stores the
table in benchmarks/RESULTS.md (section `phase_features <backend>`).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time
from typing import Callable, Sequence

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import (backend_name, code_version, load_average, machine_description,  # noqa: E402
                    update_section)

from gsvit_jax.data.demo_cholec80 import build_demo_cholec80  # noqa: E402
from gsvit_jax.data.frames import open_prepared  # noqa: E402
from gsvit_jax.data.sharding import data_mesh  # noqa: E402
from gsvit_jax.models.random_init import random_variables  # noqa: E402
from gsvit_jax.phase.encoder import build_encoder, fingerprint, make_encode_fn  # noqa: E402
from gsvit_jax.phase.features import build_feature_cache  # noqa: E402

CHOLEC80_FRAMES = 184_500  # the 80 videos sampled at 1 fps
QUICK = dict(variant='m0', image_size=64, videos=2, seconds=6, batch=8, rounds=1)


def phase_encoder(variant: str, image_size: int) -> tuple[Callable, str]:
    """The phase pipeline's `encode_fn` for a randomly initialised encoder, and its fingerprint."""
    encoder = build_encoder(variant, image_size)
    variables = random_variables(encoder, image_size)
    return (make_encode_fn(encoder, variables, data_mesh(jax.local_devices())),
            fingerprint(variables, variant=variant, image_size=image_size))


def time_cache(source: Sequence[dict], encode_fn: Callable, encoder_fp: str,
               directory: pathlib.Path, workers: int, args) -> tuple[float, int]:
    """Seconds to build the whole cache of `source` into an emptied `directory`; latent size."""
    shutil.rmtree(directory, ignore_errors=True)
    start = time.perf_counter()
    manifest = build_feature_cache(source, encode_fn, directory, encoder_fingerprint=encoder_fp,
                                   image_size=args.image_size, batch_size=args.batch,
                                   dtype=args.dtype, worker_count=workers)
    seconds = time.perf_counter() - start
    assert sum(v['frames'] for v in manifest['videos'].values()) == len(source)
    return seconds, manifest['dim']


def time_encoder(encode_fn: Callable, frames: np.ndarray, batch: int) -> float:
    """Seconds for `encode_fn` over `frames` in batches of `batch` (it returns host arrays, so
    each call has finished when it returns)."""
    start = time.perf_counter()
    for i in range(0, len(frames), batch):
        encode_fn(frames[i:i + batch])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--variant', default='m5', help='EfficientViT encoder variant')
    parser.add_argument('--image-size', type=int, default=224)
    parser.add_argument('--videos', type=int, default=4)
    parser.add_argument('--seconds', type=int, default=120,
                        help='length of each video = frames kept (1 fps)')
    parser.add_argument('--batch', type=int, default=256,
                        help="encoder batch (the phase config's features.batch_size)")
    parser.add_argument('--dtype', default='float16', choices=['float16', 'float32'],
                        help='stored latents')
    parser.add_argument('--workers', type=int, nargs='+', default=[0],
                        help='Grain worker processes decoding the JPEGs (one row each)')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--workdir', help='keep the generated data here (default: a temp dir)')
    parser.add_argument('--quick', action='store_true', help=f'smoke test: {QUICK} (flags given '
                        'explicitly still win; figures not for RESULTS.md)')
    parser.add_argument('--write', action='store_true', help='update benchmarks/RESULTS.md')
    if parser.parse_known_args()[0].quick:
        parser.set_defaults(**QUICK)
    args = parser.parse_args()
    if args.quick and args.write:
        parser.error('--quick figures are a smoke test: they are not written to RESULTS.md')
    if any(args.workers):
        from absl import flags
        flags.FLAGS.mark_as_parsed()  # Grain's worker processes read absl flags

    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix='gsvit_bench_features_') as tmp:
        root = pathlib.Path(args.workdir or tmp)
        start = time.perf_counter()
        builder_dir = build_demo_cholec80(root / 'data', train_videos=range(1, args.videos + 1),
                                          test_videos=(), seconds=args.seconds,
                                          image_size=args.image_size)
        source = open_prepared(builder_dir, 'train')
        print(f'{len(source)} frames of {args.videos} generated videos ready in '
              f'{time.perf_counter() - start:.0f} s', flush=True)

        encode_fn, encoder_fp = phase_encoder(args.variant, args.image_size)
        frames = np.random.default_rng(0).integers(
            0, 256, (len(source), args.image_size, args.image_size, 3), np.uint8)
        warmup, dim = time_cache(source, encode_fn, encoder_fp, root / 'features', args.workers[0],
                                 args)
        print(f'untimed first build (compiles): {warmup:.1f} s', flush=True)
        cache = {w: [] for w in args.workers}
        encoder = []
        for r in range(args.rounds):
            for w in args.workers:
                cache[w].append(time_cache(source, encode_fn, encoder_fp, root / 'features', w,
                                           args)[0])
            encoder.append(time_encoder(encode_fn, frames, args.batch))
            print(f'round {r + 1}/{args.rounds}: '
                  + ', '.join(f'cache (workers {w}) {cache[w][-1]:.1f} s' for w in args.workers)
                  + f', encoder alone {encoder[-1]:.1f} s', flush=True)
    load_after = load_average()

    n = len(source)
    encoder_s = statistics.median(encoder)

    def row(name: str, seconds: float) -> str:
        rate = n / seconds
        return (f'| {name} | {seconds:.2f} | {rate:.1f} | {CHOLEC80_FRAMES / rate / 3600:.2f} '
                f'| {encoder_s / seconds:.0%} |')
    lines = [
        f'### Phase feature cache ({args.variant.upper()} encoder, {args.image_size}x'
        f'{args.image_size}, batch {args.batch}) — {machine_description()}',
        '',
        f'`build_feature_cache` over {n} frames ({args.videos} generated Cholec80-layout videos '
        f'of {args.seconds} s, 1 fps, JPEG), end to end: Grain reading + JPEG decoding with '
        f'`worker_count` processes (their start included), the jitted encoder on '
        f'{len(jax.local_devices())} {jax.devices()[0].platform} device(s), {args.dtype} latents '
        f'of {dim} values written per video. "Encoder alone" is the same `encode_fn` on {n} '
        f'in-memory frames in the same batches (host-device copies included). Median of '
        f'{args.rounds} interleaved rounds after an untimed build; random weights. Code '
        f'{code_version()}, jax {jax.__version__}; load average (1, 5, 15 min) {load_before} '
        f'before, {load_after} after. Measured {time.strftime("%Y-%m-%d")} with '
        f'`python benchmarks/phase_features.py {" ".join(sys.argv[1:])}`.',
        '',
        f'| measured | seconds | frames/s | all of Cholec80, {CHOLEC80_FRAMES / 1000:g}k frames '
        '(h) | encoder share of the time |',
        '|---|---|---|---|---|',
        *[row(f'feature cache build, `worker_count={w}`', statistics.median(cache[w]))
          for w in args.workers],
        row('encoder alone', encoder_s),
    ]
    table = '\n'.join(lines)
    print(table)
    if args.write:
        update_section(f'phase_features {backend_name()}', table)


if __name__ == '__main__':
    main()
