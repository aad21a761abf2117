"""Frame datasets prepared by `tfds_builders`: random-access sources and their per-frame metadata."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np


def open_frames(name: str, split: str, data_dir: str | None = None) -> Sequence[dict[str, Any]]:
    """Random-access TFDS source whose `image` stays JPEG bytes (decoded later, in Grain workers)."""
    import tensorflow_datasets as tfds
    return tfds.data_source(name, split=split, data_dir=data_dir,
                            decoders={'image': tfds.decode.SkipDecoding()})


def open_prepared(builder_dir: str | os.PathLike, split: str) -> Sequence[dict[str, Any]]:
    """Like `open_frames`, for a prepared dataset directory (e.g. a custom builder config)."""
    import tensorflow_datasets as tfds
    builder = tfds.builder_from_directory(str(builder_dir))
    return builder.as_data_source(split=split, decoders={'image': tfds.decode.SkipDecoding()})


def as_text(value: Any) -> str:
    """TFDS returns Text features as bytes; normalise to str."""
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclasses.dataclass(frozen=True)
class FrameTable:
    """Per-record metadata (record position i -> video, frame index, time) of a frame source.

    TFDS shuffles examples when writing, so record order says nothing about time; this table
    is what pairs frames and groups them by video.
    """

    video_ids: np.ndarray  # (N,) str
    frame_index: np.ndarray  # (N,) int64
    timestamp_s: np.ndarray  # (N,) float64

    @classmethod
    def from_source(cls, source: Sequence[dict[str, Any]]) -> 'FrameTable':
        ids, frames, times = [], [], []
        for i in range(len(source)):
            record = source[i]
            ids.append(as_text(record['video_id']))
            frames.append(int(record['frame_index']))
            times.append(float(record['timestamp_s']))
        return cls(np.array(ids, dtype=str), np.array(frames, np.int64), np.array(times, np.float64))

    def __len__(self) -> int:
        return len(self.video_ids)

    def videos(self) -> dict[str, np.ndarray]:
        """video id -> record positions of its frames in time order."""
        order = np.lexsort((self.timestamp_s, self.video_ids))
        ids = self.video_ids[order]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        return {str(ids[s]): order[s:e] for s, e in zip(starts, np.r_[starts[1:], len(ids)])}
