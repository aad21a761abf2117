"""`gsvit-embed` throughput: is embedding limited by the encoder or by decoding?

    python benchmarks/embed_throughput.py [--minutes 10] [--variant m5] [--rounds 2] [--quick] [--write]

Writes a generated video (640x360, 25 fps, H.264 with B-frames, a textured scene panning like an
endoscope) into a temporary folder (removed afterwards), then measures on its 1-fps frames:
decoding alone (the background decoder: sampling, RGB, resize), the encoder alone on the same
already-decoded frames (`Encoder.latent`, the same batches), and `embed` end to end. Each is the
best of `--rounds` (other jobs share the CPU), all from one run so the ratios compare like with
like. Random weights: the cost does not depend on their values. `--quick`: a 30-s video and the
tiny variant at 64 px, to check the script. `--write` stores the table in benchmarks/RESULTS.md
(section `embed_throughput <backend>`).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from fractions import Fraction

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import (backend_name, code_version, load_average,  # noqa: E402
                    machine_description, update_section)

import gsvit_jax  # noqa: E402
from gsvit_jax.embed.decode import BackgroundDecoder, Frames  # noqa: E402
from gsvit_jax.embed.inputs import find_videos  # noqa: E402
from gsvit_jax.embed.run import default_workers, embed  # noqa: E402

FPS, HEIGHT, WIDTH = 25, 360, 640
X264 = {'preset': 'veryfast', 'crf': '23'}  # x264's default B-frames (3, pyramid) stay on


def write_scene(path: str, seconds: float) -> None:
    """A blurred random texture seen through a window that pans smoothly; four noisy copies of
    the texture alternate so that no two frames are the same."""
    import av
    from PIL import Image, ImageFilter
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (HEIGHT // 2, WIDTH // 2, 3), np.uint8)
    texture = Image.fromarray(coarse).resize((2 * WIDTH, 2 * HEIGHT), Image.BILINEAR)
    texture = np.asarray(texture.filter(ImageFilter.GaussianBlur(1)), np.int16)
    noisy = [np.clip(texture + rng.integers(-12, 13, texture.shape), 0, 255).astype(np.uint8)
             for _ in range(4)]
    with av.open(path, mode='w') as container:
        stream = container.add_stream('libx264', rate=Fraction(FPS))
        stream.height, stream.width, stream.pix_fmt, stream.options = HEIGHT, WIDTH, 'yuv420p', X264
        for i in range(round(seconds * FPS)):
            t = i / FPS
            y = int(HEIGHT / 2 * (1 + np.sin(t / 7)))
            x = int(WIDTH / 2 * (1 + np.cos(t / 5)))
            frame = av.VideoFrame.from_ndarray(noisy[i % 4][y:y + HEIGHT, x:x + WIDTH], 'rgb24')
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def best_time(fn, rounds: int) -> tuple[float, object]:
    """The shortest of `rounds` runs of `fn` (seconds) and its last result."""
    times, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--minutes', type=float, default=None, help='video length (10; quick 0.5)')
    parser.add_argument('--variant', default=None, help='EfficientViT variant (m5; quick: tiny)')
    parser.add_argument('--img-size', type=int, default=None, help='encoder input (224; quick 64)')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--rounds', type=int, default=2, help='best of this many runs each')
    parser.add_argument('--quick', action='store_true', help='a short smoke run')
    parser.add_argument('--write', action='store_true', help='update benchmarks/RESULTS.md')
    args = parser.parse_args()
    if args.quick and args.write:
        parser.error('--quick runs are smoke tests; their figures are not written')
    minutes = args.minutes or (0.5 if args.quick else 10.0)
    variant = args.variant or ('tiny' if args.quick else 'm5')
    img_size = args.img_size or (64 if args.quick else 224)
    load_before = load_average()

    with tempfile.TemporaryDirectory(prefix='gsvit_embed_bench_') as tmp:
        video = os.path.join(tmp, 'scene.mp4')
        start = time.perf_counter()
        write_scene(video, minutes * 60)
        bitrate = os.path.getsize(video) * 8 / 1e6 / (minutes * 60)
        print(f'wrote a {minutes:g}-min {WIDTH}x{HEIGHT} {FPS}-fps video ({bitrate:.2f} Mbit/s) '
              f'in {time.perf_counter() - start:.0f} s')
        encoder = gsvit_jax.load_encoder(None, variant=variant, img_size=img_size,
                                         batch_size=args.batch_size)
        videos = find_videos([video])
        workers = default_workers()

        def decode_only() -> np.ndarray:
            with BackgroundDecoder(videos, fps=1.0, size=img_size, batch_size=args.batch_size,
                                   workers=workers) as decoder:
                return np.concatenate([item.images for item in decoder
                                       if isinstance(item, Frames)])

        def encoder_only() -> None:
            for begin in range(0, len(frames), args.batch_size):  # as embed calls it: full
                batch = frames[begin:begin + args.batch_size]     # batches, the last padded
                pad = args.batch_size - len(batch)
                encoder.latent(np.concatenate([batch, np.repeat(batch[-1:], pad, 0)]))

        runs = iter(range(args.rounds))

        def end_to_end() -> None:
            embed([video], os.path.join(tmp, f'out{next(runs)}'), encoder,
                  fps=1.0, progress=False)

        frames = decode_only()
        encoder_only()  # compile (the padded batch shape) before timing
        decode_s, _ = best_time(decode_only, args.rounds)
        encoder_s, _ = best_time(encoder_only, args.rounds)
        embed_s, _ = best_time(end_to_end, args.rounds)

    count, source = len(frames), round(minutes * 60 * FPS)
    rows = [('decode only (1-fps sampling, RGB, resize)', decode_s),
            ('encoder alone (Encoder.latent, same frames)', encoder_s),
            ('gsvit-embed end to end (embed, 1 fps)', embed_s)]
    header = (f'{machine_description()}; EfficientViT-{variant.upper()} at {img_size} px, batch '
              f'{args.batch_size}, {jax_devices()}; {workers} decode threads; load average '
              f'{load_before} before, {load_average()} after; best of {args.rounds}')
    video_line = (f'video: {minutes:g} min, {source} frames at {FPS} fps, {WIDTH}x{HEIGHT}, x264 '
                  f'{X264["preset"]} crf {X264["crf"]}; {count} frames sampled at 1 fps')
    table = ['| step | seconds | sampled frames/s | source frames/s | vs encoder alone |',
             '|---|---|---|---|---|']
    table += [f'| {name} | {seconds:.2f} | {count / seconds:.1f} | {source / seconds:.0f} | '
              f'{encoder_s / seconds:.2f}x |' for name, seconds in rows]
    print(f'\n{header}\n{video_line}\n\n' + '\n'.join(table))
    if args.write:
        update_section(f'embed_throughput {backend_name()}', '\n'.join([
            f'### gsvit-embed throughput (1 fps from a generated video) — {machine_description()}',
            '', f'{header}. {video_line}. Code {code_version()}; measured with '
            f'`python benchmarks/embed_throughput.py --write`.', '', *table]))

def jax_devices() -> str:
    import jax
    devices = jax.local_devices()
    return f'{len(devices)} {devices[0].platform} device(s)'


if __name__ == '__main__':
    main()
