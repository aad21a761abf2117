"""Video decoding for the builders: sample frames with PyAV, resize and JPEG-encode them.

Decoding failures of any kind (unreadable container, no video stream, zero frames, truncated
stream) raise `VideoReadError`, so a builder can skip and report the video instead of crashing.
"""
from __future__ import annotations

import io
import pathlib
from typing import Iterator

import numpy as np
from PIL import Image

from gsvit_jax.errors import describe


class VideoReadError(Exception):
    """A video could not be decoded (or holds no frames); the message says why."""


def iter_frames(path: str | pathlib.Path) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield (frame_index, timestamp_s, RGB uint8 (H, W, 3)) for every decoded frame, in order.

    `frame_index` counts decoded frames from 0 (the convention of 25-fps annotation files);
    `timestamp_s` is the presentation time, or index / average rate when the stream has none.
    """
    import av
    try:
        container = av.open(str(path))
    except Exception as e:  # noqa: BLE001 - any open failure means an unusable file
        raise VideoReadError(f'{path}: cannot open ({describe(e)})') from e
    with container:
        if not container.streams.video:
            raise VideoReadError(f'{path}: no video stream')
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        index = 0
        try:
            for frame in container.decode(stream):
                time = frame.time if frame.time is not None else index / rate
                yield index, float(time), frame.to_ndarray(format='rgb24')
                index += 1
        except av.FFmpegError as e:
            raise VideoReadError(f'{path}: decoding failed after {index} frames ({e})') from e
        if index == 0:
            raise VideoReadError(f'{path}: no decodable frames')


def frame_rate(path: str | pathlib.Path) -> float:
    """Average frame rate of the first video stream."""
    import av
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return float(stream.average_rate or stream.guessed_rate)
    except Exception as e:  # noqa: BLE001
        raise VideoReadError(f'{path}: cannot read the frame rate ({e})') from e


def sample_at_fps(path: str | pathlib.Path, fps: float) -> Iterator[tuple[int, float, np.ndarray]]:
    """One frame per 1/fps seconds: the first frame at or after each k/fps (half a frame early ok)."""
    next_time, slack = 0.0, None
    for index, time, image in iter_frames(path):
        if slack is None:
            slack = 0.5 / frame_rate(path)
        if time + slack >= next_time:
            yield index, time, image
            next_time += 1.0 / fps
            while time + slack >= next_time:  # the source skipped ahead: stay on the grid
                next_time += 1.0 / fps


def encode_jpeg(image: np.ndarray, size: int | tuple[int, int] | None, quality: int = 90) -> bytes:
    """RGB uint8 image -> JPEG bytes, bilinearly resized to `size` (side, or (height, width))."""
    pil = Image.fromarray(image)
    if size is not None:
        height, width = (size, size) if isinstance(size, int) else size
        if pil.size != (width, height):
            pil = pil.resize((width, height), Image.BILINEAR)
    buffer = io.BytesIO()
    pil.save(buffer, format='JPEG', quality=quality)
    return buffer.getvalue()
