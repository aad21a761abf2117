"""Small generated videos for tests, dummy data and demos (no real surgical video is needed).

`index_frames` draws each frame's index as a 4x4 grid of black/white blocks (16 bits) that survives
H.264, resizing and JPEG, and `read_index` reads it back, so a test can prove which source frame
ended up in which example.
"""
from __future__ import annotations

import pathlib
from fractions import Fraction
from typing import Iterable

import numpy as np

GRID = 4  # 4x4 blocks = 16 bits


def index_frame(index: int, height: int = 64, width: int = 96) -> np.ndarray:
    """RGB uint8 frame whose blocks spell `index` in binary (most significant bit first)."""
    if not 0 <= index < 2 ** (GRID * GRID):
        raise ValueError(f'frame index {index} does not fit in {GRID * GRID} bits')
    bits = [(index >> (GRID * GRID - 1 - b)) & 1 for b in range(GRID * GRID)]
    blocks = np.array(bits, np.uint8).reshape(GRID, GRID) * 200 + 28
    frame = np.kron(blocks, np.ones((height // GRID, width // GRID), np.uint8))
    return np.repeat(frame[..., None], 3, axis=2)


def index_frames(num_frames: int, height: int = 64, width: int = 96, start: int = 0) -> np.ndarray:
    """(T, H, W, 3) frames numbered start, start+1, ..."""
    return np.stack([index_frame(start + i, height, width) for i in range(num_frames)])


def read_index(image: np.ndarray) -> int:
    """Decode the number drawn by `index_frame` from an RGB (or BGR) image of any size/scale."""
    image = np.asarray(image, np.float32)
    if image.max() <= 1.0:
        image = image * 255.0
    gray = image.mean(axis=-1)
    height, width = gray.shape
    value = 0
    for r in range(GRID):
        for c in range(GRID):
            # the centre half of each block, away from compression ringing at its edges
            y0, y1 = (4 * r + 1) * height // (4 * GRID), (4 * r + 3) * height // (4 * GRID)
            x0, x1 = (4 * c + 1) * width // (4 * GRID), (4 * c + 3) * width // (4 * GRID)
            value = (value << 1) | int(gray[y0:y1, x0:x1].mean() > 128)
    return value


def write_video(path: str | pathlib.Path, frames: Iterable[np.ndarray], fps: float = 25,
                codec: str = 'libx264') -> pathlib.Path:
    """Encode RGB uint8 frames into an H.264 mp4 (or any PyAV codec) at `fps`."""
    import av
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = iter(frames)
    first = next(frames)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode='w') as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = 'yuv420p'
        stream.options = {'crf': '18', 'preset': 'ultrafast'} if codec == 'libx264' else {}
        for image in (first, *frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format='rgb24')):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_corrupt_video(path: str | pathlib.Path, seed: int = 0) -> pathlib.Path:
    """A file named like a video that holds random bytes."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


def write_empty_video(path: str | pathlib.Path) -> pathlib.Path:
    """An mp4 container with a video stream but zero frames."""
    import av
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode='w') as container:
        stream = container.add_stream('libx264', rate=25)
        stream.height, stream.width, stream.pix_fmt = 64, 96, 'yuv420p'
        container.start_encoding()  # write the header although no frame follows
    return path


def write_truncated_video(path: str | pathlib.Path, frames: np.ndarray, fps: float = 25,
                          keep: float = 0.5) -> pathlib.Path:
    """A real mp4 cut to `keep` of its bytes (as from an interrupted download)."""
    path = write_video(path, frames, fps)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path
