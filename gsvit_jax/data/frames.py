"""Frame datasets prepared by `tfds_builders`: random-access sources and their per-frame metadata."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from gsvit_jax.atomic import write_atomic
from gsvit_jax.cache_dir import default_cache_dir

log = logging.getLogger(__name__)


def open_frames(name: str, split: str, data_dir: str | None = None) -> Sequence[dict[str, Any]]:
    """Random-access TFDS source whose `image` stays JPEG bytes (decoded later, in Grain workers)."""
    import tensorflow_datasets as tfds
    return tfds.data_source(name, split=split, data_dir=data_dir,
                            decoders={'image': tfds.decode.SkipDecoding()})


def check_prepared(name: str, data_dir: str, field: str, ours: str) -> None:
    """A TFDS dataset `name` (`ours`: the builder of this project that fits) that exists and is
    prepared under `data_dir`; TFDS's own error for an unknown name lists hundreds of datasets."""
    import tensorflow_datasets as tfds

    import tfds_builders  # noqa: F401  registers gensurgery and cholec80
    from gsvit_jax.errors import UserError
    try:
        builder = tfds.builder(name, data_dir=data_dir or None)
    except Exception as e:  # noqa: BLE001  DatasetNotFoundError, unknown builder config, ...
        reason = str(e).splitlines()[0] if ' config ' in str(e) else 'no such dataset'
        raise UserError(f'{field}={name!r}: {reason}; expected {ours!r} (prepared with python -m '
                        f'tfds_builders.build {ours.split("/")[0]}), or another registered TFDS '
                        'dataset of video frames') from e
    if not builder.is_prepared():
        raise UserError(f'{field}={name!r}: not prepared under '
                        f'{data_dir or "~/tensorflow_datasets"} (data.data_dir); prepare it first '
                        f'(python -m tfds_builders.build {ours.split("/")[0]} --manual_dir=...; '
                        'README "Data"), or try the built-in :demo')


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
        """Read every record's metadata (~80 us per frame from ArrayRecord on a 2-core CPU)."""
        ids, frames, times = [], [], []
        for i in tqdm(range(len(source)), desc='indexing frames', unit='frame',
                      disable=len(source) < 100_000):
            record = source[i]
            ids.append(as_text(record['video_id']))
            frames.append(int(record['frame_index']))
            times.append(float(record['timestamp_s']))
        return cls(np.array(ids, dtype=str), np.array(frames, np.int64), np.array(times, np.float64))

    @classmethod
    def cached(cls, source: Sequence[dict[str, Any]],
               cache_dir: str | os.PathLike | None = None) -> 'FrameTable':
        """`from_source`, kept on disk for a prepared TFDS split, so that only the first start pays
        for reading every record (GenSurgery's ~2.4M frames: minutes). The cache is keyed by the
        split's files (path, sizes, modification times): a rebuilt dataset is indexed afresh."""
        key = source_fingerprint(source)
        if key is None:  # in memory: nothing to key a cache on
            return cls.from_source(source)
        path = pathlib.Path(cache_dir or default_cache_dir()) / 'frame_index' / f'{key}.npz'
        if path.exists():
            try:
                with np.load(path) as saved:
                    table = cls(saved['video_ids'], saved['frame_index'], saved['timestamp_s'])
                if len(table) == len(source):
                    return table
            except (OSError, ValueError, KeyError) as error:
                log.warning('ignoring the unreadable frame index %s (%s)', path, error)
        table = cls.from_source(source)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, lambda f: np.savez(f, video_ids=table.video_ids,
                                                  frame_index=table.frame_index,
                                                  timestamp_s=table.timestamp_s))
        except OSError as error:  # a read-only home directory must not stop training
            log.warning('could not keep the frame index at %s (%s)', path, error)
        return table

    def __len__(self) -> int:
        return len(self.video_ids)

    def videos(self) -> dict[str, np.ndarray]:
        """video id -> record positions of its frames in time order."""
        order = np.lexsort((self.timestamp_s, self.video_ids))
        ids = self.video_ids[order]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        return {str(ids[s]): order[s:e] for s, e in zip(starts, np.r_[starts[1:], len(ids)])}


def source_fingerprint(source: Any) -> str | None:
    """A key for a prepared TFDS split on disk: its directory, split, record count and its files'
    names, sizes and modification times. None for sources that are not TFDS data sources."""
    info, split = getattr(source, 'dataset_info', None), getattr(source, 'split', None)
    if info is None or not isinstance(split, str):
        return None
    data_dir = pathlib.Path(info.data_dir).resolve()
    base = split.split('[')[0]  # 'train[:10%]' reads the files of 'train'
    files = [(p.name, p.stat().st_size, p.stat().st_mtime_ns)
             for p in sorted(data_dir.glob(f'*-{base}.*'))]
    if not files:
        return None
    identity = json.dumps([str(data_dir), split, len(source), files])
    return hashlib.sha256(identity.encode()).hexdigest()[:32]
