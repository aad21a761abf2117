"""Next-frame pairs for pre-training, read by random access from a frame source.

Pairs are positions (i, j) into the frame records, so nothing is stored twice: frame j is the frame
of the same video `gap_s` seconds after frame i (the nearest sampled frame within half a sample
interval). Pairs never cross videos.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from gsvit_jax.data.frames import FrameTable, as_text


def next_frame_pairs(table: FrameTable, gap_s: float, tolerance_s: float | None = None) -> np.ndarray:
    """(P, 2) int64 record positions (frame t, frame t + gap_s) of the same video, sorted by t."""
    if gap_s <= 0:
        raise ValueError(f'gap_s must be positive, got {gap_s}')
    pairs = []
    for positions in table.videos().values():
        times = table.timestamp_s[positions]
        if len(times) < 2:
            continue
        step = float(np.median(np.diff(times)))
        tol = tolerance_s if tolerance_s is not None else 0.5 * step
        target = times + gap_s
        j = np.clip(np.searchsorted(times, target), 1, len(times) - 1)
        nearer_left = np.abs(times[j - 1] - target) <= np.abs(times[j] - target)
        j = np.where(nearer_left, j - 1, j)
        ok = (np.abs(times[j] - target) <= tol + 1e-9) & (j > np.arange(len(times)))
        if ok.any():
            pairs.append(np.stack([positions[ok], positions[j[ok]]], axis=1))
    if not pairs:
        raise ValueError(f'no frame pairs {gap_s} s apart: every video has fewer than two frames '
                         'or is shorter than the gap')
    return np.concatenate(pairs).astype(np.int64)


class PairSource:
    """Grain random-access source: index -> {'frame', 'next_frame' (JPEG bytes), metadata}."""

    def __init__(self, frames: Sequence[dict[str, Any]], pairs: np.ndarray):
        self._frames = frames
        self._pairs = np.asarray(pairs, np.int64)

    def __len__(self) -> int:
        return len(self._pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        first, second = (self._frames[int(i)] for i in self._pairs[index])
        return {'frame': first['image'], 'next_frame': second['image'],
                'video_id': as_text(first['video_id']),
                'timestamp_s': np.float32(first['timestamp_s']),
                'next_timestamp_s': np.float32(second['timestamp_s'])}

    def __repr__(self) -> str:
        return f'PairSource({len(self)} pairs over {len(self._frames)} frames)'
