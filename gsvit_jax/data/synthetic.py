"""Procedural surgery-like video: deforming pink tissue, a moving instrument, specular glints.

Used by the built-in demo and the tests (no real surgical video can be shipped). Motion is smooth,
so the next frame is predictable from the current one, which is what pre-training needs.
"""
from __future__ import annotations

import numpy as np


def _tissue(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random texture in [0, 1] (sum of a few random sinusoids), shape (H, W)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = np.zeros((height, width), np.float32)
    for _ in range(6):
        fy, fx = rng.uniform(0.01, 0.08, 2)
        phase = rng.uniform(0, 2 * np.pi)
        texture += np.sin(fy * yy + fx * xx + phase)
    return (texture - texture.min()) / (np.ptp(texture) + 1e-6)


def surgical_video(num_frames: int, height: int = 144, width: int = 256,
                   seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8 **RGB** frames of a slowly deforming scene with a moving tool shaft."""
    rng = np.random.default_rng(seed)
    base = _tissue(2 * height, 2 * width, rng)
    tint = np.array([0.85, 0.35, 0.38], np.float32) * rng.uniform(0.8, 1.1, 3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle0, speed = rng.uniform(0, np.pi), rng.uniform(0.02, 0.05)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        dy = int(height / 2 + height / 3 * np.sin(0.05 * t))  # camera drift over the tissue
        dx = int(width / 2 + width / 3 * np.cos(0.03 * t))
        patch = base[dy:dy + height, dx:dx + width]
        patch = patch + 0.08 * np.sin(0.15 * xx + 0.2 * t) * np.cos(0.1 * yy)  # breathing
        image = (0.35 + 0.65 * patch)[..., None] * tint
        # instrument: a grey shaft from the image border pivoting about its entry point
        angle = angle0 + 0.4 * np.sin(speed * t * 2 * np.pi)
        tip = np.array([height * (0.5 + 0.25 * np.sin(0.07 * t)), width * 0.55])
        direction = np.array([np.sin(angle), np.cos(angle)])
        rel_y, rel_x = yy - tip[0], xx - tip[1]
        along = rel_y * direction[0] + rel_x * direction[1]
        across = np.abs(-rel_y * direction[1] + rel_x * direction[0])
        shaft = (along > 0) & (across < height * 0.045)
        image[shaft] = 0.55 + 0.25 * (1 - across[shaft, None] / (height * 0.045))
        glint = (rel_y ** 2 + rel_x ** 2) < (height * 0.02) ** 2
        image[glint] = 1.0
        frames[t] = np.clip(image * 255, 0, 255).astype(np.uint8)
    return frames


def synthetic_frame_records(num_videos: int, seconds: int, *, size: int = 64, fps: float = 1.0,
                            seed: int = 0) -> list[dict]:
    """In-memory frame source shaped like a `gensurgery` split (JPEG `image`, `video_id`,
    `frame_index`, `timestamp_s`), sampled at `fps` from 25-fps synthetic videos. For smoke runs and
    tests that do not need the TFDS builder."""
    from tfds_builders.video import encode_jpeg
    records = []
    step = int(round(25 / fps))
    for v in range(num_videos):
        frames = surgical_video(seconds * 25, height=size, width=size, seed=seed + v)
        for t, index in enumerate(range(0, len(frames), step)):
            records.append({'image': encode_jpeg(frames[index], None), 'video_id': f'synthetic{v:03d}',
                            'frame_index': index, 'timestamp_s': np.float32(t / fps)})
    return records
