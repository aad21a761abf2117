"""Pre-training input pipeline: GenSurgery dataset generation and Grain next-frame pairs.

    python benchmarks/data_pipeline.py [--videos 6] [--seconds 40] [--build-workers 1 2]
                                       [--loader-workers 0 1 2] [--batch 32] [--rounds 3] [--write]

1. Generation. Writes `--videos` procedural surgery-like videos (`synthetic.surgical_video`,
   144x256 at 25 fps, `--seconds` each) in GenSurgery's manual-dir layout, then builds the real
   TFDS dataset (PyAV decode of every frame, 1-fps sampling, resize to 224, JPEG, ArrayRecord)
   once per `--build-workers` value (the builder's `num_workers` process pool). Reports decoded
   source frames/s and stored examples/s, in total and per worker, plus the same for
   `process_video` called in this process (one core, no TFDS writing: the per-core ceiling).
2. Loading. The Grain pre-training pipeline over that dataset (`open_prepared` -> `FrameTable` ->
   1-s `next_frame_pairs` -> `PairSource` -> `DecodePair(224)` + `SelectFields` ->
   `make_loader`) for each `--loader-workers` value: pairs/s after `--warmup` batches, a fresh
   loader per round, rounds interleaved across worker counts; time to the first batch too.

`--write` stores the table in benchmarks/RESULTS.md (section `data_pipeline cpu`).
"""
from __future__ import annotations

import argparse
import gc
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tfds_builders
from report import code_version, load_average, machine_description, update_section  # noqa: E402

BATCH_FIELDS = ('frame', 'next_frame')
CATEGORIES = ('cholestectomy', 'colectomy', 'hernia', 'appendectomy', 'robotic_chole')


def write_videos(manual_dir: pathlib.Path, args) -> tuple[list, float]:
    from gsvit_jax.data.synthetic import surgical_video
    from tfds_builders.gensurgery import fake_data
    videos = [fake_data.FakeVideo(f'benchVid{i:03d}', (CATEGORIES[i % len(CATEGORIES)],),
                                  seconds=args.seconds, fps=args.video_fps)
              for i in range(args.videos)]  # 11-character IDs, like YouTube's
    start = time.perf_counter()
    fake_data.write_manual_dir(manual_dir, videos, frames=surgical_video,
                               height=args.height, width=args.width)
    return videos, time.perf_counter() - start


def build(manual_dir: pathlib.Path, data_dir: pathlib.Path, workers: int, image_size: int):
    """Build the dataset with `workers` processes; returns (seconds, builder)."""
    import tensorflow_datasets as tfds
    from tfds_builders.gensurgery.gensurgery_dataset_builder import Builder, BuilderConfig
    config = BuilderConfig(name=f'bench_1fps_{image_size}', fps=1.0, image_size=image_size,
                           validation_percent=0, description='benchmark: procedural videos')
    builder = Builder(config=config, data_dir=str(data_dir), file_format='array_record')
    builder.num_workers = workers
    start = time.perf_counter()
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return time.perf_counter() - start, builder


def in_process_generation(manual_dir: pathlib.Path, videos, image_size: int) -> tuple[float, int]:
    """`process_video` over every video in this process: (seconds, stored examples)."""
    from tfds_builders.gensurgery.gensurgery_dataset_builder import VideoTask, process_video
    start, examples = time.perf_counter(), 0
    for v in videos:
        task = VideoTask(v.video_id, str(manual_dir / v.path), v.path, v.categories,
                         v.categories[0], 1.0, image_size)
        examples += len(process_video(task))
    return time.perf_counter() - start, examples


def pair_source(builder_dir: str):
    from gsvit_jax.data.frames import FrameTable, open_prepared
    from gsvit_jax.data.pairs import PairSource, next_frame_pairs
    frames = open_prepared(builder_dir, 'train')
    pairs = next_frame_pairs(FrameTable.from_source(frames), 1.0)
    return PairSource(frames, pairs)


def time_loader(source, workers: int, args) -> tuple[float, float]:
    """A fresh loader: (seconds to the first batch, pairs/s over `--batches` after warm-up)."""
    from gsvit_jax.data.loader import make_loader
    from gsvit_jax.data.transforms import DecodePair, SelectFields
    loader = make_loader(source, [DecodePair(args.image_size), SelectFields(BATCH_FIELDS)],
                         global_batch_size=args.batch, seed=0, worker_count=workers,
                         shard=(0, 1))
    start = time.perf_counter()
    iterator = iter(loader)
    batch = next(iterator)
    first = time.perf_counter() - start
    assert batch['frame'].shape == (args.batch, args.image_size, args.image_size, 3)
    for _ in range(args.warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(args.batches):
        next(iterator)
    rate = args.batches * args.batch / (time.perf_counter() - start)
    del iterator, loader  # stops the worker processes before the next measurement
    gc.collect()
    return first, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--videos', type=int, default=6)
    parser.add_argument('--seconds', type=float, default=40.0, help='length of each video')
    parser.add_argument('--height', type=int, default=144)
    parser.add_argument('--width', type=int, default=256)
    parser.add_argument('--video-fps', type=float, default=25.0)
    parser.add_argument('--image-size', type=int, default=224)
    parser.add_argument('--build-workers', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--loader-workers', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--warmup', type=int, default=2, help='batches after the first one')
    parser.add_argument('--batches', type=int, default=24, help='timed batches per round')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--workdir', help='keep the generated data here (default: a temp dir)')
    parser.add_argument('--write', action='store_true', help='update benchmarks/RESULTS.md')
    args = parser.parse_args()

    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix='gsvit_bench_data_') as tmp:
        root = pathlib.Path(args.workdir or tmp)
        videos, write_s = write_videos(root / 'manual', args)
        frames_total = sum(round(v.seconds * v.fps) for v in videos)
        print(f'wrote {len(videos)} videos ({frames_total} frames) in {write_s:.1f} s', flush=True)

        gen_rows, builder_dir = [], None
        seconds, examples = in_process_generation(root / 'manual', videos, args.image_size)
        gen_rows.append(('`process_video` in-process (no TFDS writing)', 1, seconds, examples))
        print(f'in-process: {seconds:.1f} s, {examples} examples', flush=True)
        for workers in args.build_workers:
            seconds, builder = build(root / 'manual', root / f'tfds_w{workers}', workers,
                                     args.image_size)
            stored = builder.info.splits['train'].num_examples
            gen_rows.append((f'TFDS build, `num_workers={workers}`', workers, seconds, stored))
            builder_dir = builder_dir or builder.data_dir
            print(f'build with {workers} worker(s): {seconds:.1f} s, {stored} examples', flush=True)

        source = pair_source(builder_dir)
        print(f'{source}', flush=True)
        first = {w: [] for w in args.loader_workers}
        rate = {w: [] for w in args.loader_workers}
        for r in range(args.rounds):
            for workers in args.loader_workers:
                f, p = time_loader(source, workers, args)
                first[workers].append(f)
                rate[workers].append(p)
            done = ', '.join(f'{w} workers {rate[w][-1]:.0f} pairs/s' for w in args.loader_workers)
            print(f'round {r + 1}/{args.rounds} done: {done}', flush=True)
    load_after = load_average()

    import jax
    import tensorflow_datasets as tfds
    machine = machine_description()
    gen_table = [f'| {name} | {w} | {s:.1f} | {frames_total / s:.0f} | {frames_total / s / w:.0f} '
                 f'| {n / s:.1f} | {n / s / w:.1f} |' for name, w, s, n in gen_rows]
    rate0 = statistics.median(rate[args.loader_workers[0]])
    load_table = [f'| {w} | {statistics.median(first[w]):.2f} | {statistics.median(rate[w]):.0f} '
                  f'| {statistics.median(rate[w]) / max(w, 1):.0f} '
                  f'| {statistics.median(rate[w]) / rate0:.2f}x |' for w in args.loader_workers]
    table = '\n'.join([
        f'### Data pipeline (GenSurgery generation, Grain next-frame pairs) — {machine}',
        '',
        f'Code {code_version()}, jax {jax.__version__}, tensorflow-datasets {tfds.__version__}; '
        f'{len(videos)} procedural '
        f'videos of {args.seconds:g} s, {args.height}x{args.width} at {args.video_fps:g} fps '
        f'({frames_total} source frames, all decoded), sampled at 1 fps, stored as '
        f'{args.image_size}x{args.image_size} JPEG in ArrayRecord. Load average (1, 5, 15 min) '
        f'{load_before} before, {load_after} after: the cores were shared with other jobs. '
        f'Measured {time.strftime("%Y-%m-%d")} with `python benchmarks/data_pipeline.py '
        f'{" ".join(sys.argv[1:])}`. With one worker the builder runs in the main process (no '
        'pool).',
        '',
        'Generation (one build per row; "per worker" divides by the process count, and a build '
        'includes spawning the pool and TFDS writing/statistics):',
        '',
        '| generation | workers | seconds | source frames/s | frames/s per worker '
        '| stored examples/s | examples/s per worker |',
        '|---|---|---|---|---|---|---|',
        *gen_table,
        '',
        f'Grain loading ({len(source)} pairs, batch {args.batch}, `DecodePair({args.image_size})`: '
        f'two JPEG decodes + resize + BGR per pair; median of {args.rounds} interleaved rounds, '
        f'each a fresh loader timed over {args.batches} batches after {args.warmup + 1} warm-up '
        'batches; '
        'worker_count=0 still decodes on Grain\'s reader threads in the main process, and PIL '
        'releases the GIL, so it is not single-core):',
        '',
        '| Grain worker_count | first batch (s) | pairs/s | pairs/s per worker '
        f'| vs worker_count={args.loader_workers[0]} |',
        '|---|---|---|---|---|',
        *load_table,
    ])
    print(table)
    if args.write:
        update_section('data_pipeline cpu', table)


if __name__ == '__main__':
    main()
