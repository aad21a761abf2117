"""Feature cache: the frozen encoder's latent of every frame, computed once, reused by every head.

Layout under `<cache_dir>/<split>/`: one `<video_id>.npz` per video (`latent` (T, D) float16 or
float32, `phase` (T,) int8, `frame_index` (T,) int64, `tools` (T, 7) bool, frames in time order)
and `manifest.json` (encoder fingerprint, latent size, dtype, videos with frame counts). Several
processes build one cache together: each encodes its share of the videos (`assign_videos`) and
lists what it finished in `manifest.process-<i>.json`; one process then merges them into the
manifest (`finish_cache`). Every file is written atomically and only finished videos are listed,
so an interrupted build resumes where it stopped and never reads a half-written file. A cache
made by another encoder (different fingerprint) is refused, not silently reused.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
from typing import Any, Callable, Iterable, Mapping, Sequence

import grain
import numpy as np
from tqdm import tqdm

from gsvit_jax import distributed
from gsvit_jax.atomic import write_atomic, write_text_atomic
from gsvit_jax.data.frames import as_text
from gsvit_jax.data.transforms import PhaseEvalTransform

log = logging.getLogger(__name__)
MANIFEST = 'manifest.json'


@dataclasses.dataclass(frozen=True)
class VideoFeatures:
    """One video's cached frames, in time order."""

    video_id: str
    latent: np.ndarray  # (T, D)
    phase: np.ndarray  # (T,) int
    frame_index: np.ndarray  # (T,) int64

    def __len__(self) -> int:
        return len(self.phase)


def video_records(source: Sequence[dict[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    """video id -> record positions, phases, frame indices and tools, sorted by frame index.

    TFDS shuffles records on write, so this reads every record's metadata once.
    """
    rows: dict[str, list[tuple[int, int, int, np.ndarray]]] = {}
    for i in range(len(source)):
        record = source[i]
        rows.setdefault(as_text(record['video_id']), []).append(
            (int(record['frame_index']), i, int(record['phase']),
             np.asarray(record['tools'], bool)))
    videos = {}
    for video_id, items in sorted(rows.items()):
        items.sort(key=lambda r: r[0])
        videos[video_id] = {'positions': np.array([r[1] for r in items], np.int64),
                            'phase': np.array([r[2] for r in items], np.int8),
                            'frame_index': np.array([r[0] for r in items], np.int64),
                            'tools': np.stack([r[3] for r in items])}
    return videos


def _save_manifest(directory: pathlib.Path, manifest: Mapping[str, Any]) -> None:
    write_text_atomic(directory / MANIFEST, json.dumps(manifest, indent=1))


def read_manifest(directory: str | os.PathLike) -> dict[str, Any] | None:
    path = pathlib.Path(directory) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


class _Positions:
    """Grain source over chosen records of a frame source (keeps the record order given)."""

    def __init__(self, source: Sequence[dict[str, Any]], positions: np.ndarray):
        self._source, self._positions = source, positions

    def __len__(self) -> int:
        return len(self._positions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {'image': self._source[int(self._positions[index])]['image']}


def assign_videos(videos: Mapping[str, Mapping[str, np.ndarray]], count: int) -> dict[str, int]:
    """video id -> process, balanced by length (`distributed.split_work`)."""
    return distributed.split_work({v: len(frames['phase']) for v, frames in videos.items()}, count)


def _part_name(index: int) -> str:
    return f'manifest.process-{index}.json'


def _finished(directory: pathlib.Path, manifest: Mapping[str, Any]) -> tuple[dict[str, Any],
                                                                             int | None]:
    """Videos listed in the manifest or in any process's part manifest (an unfinished build),
    and the latent size."""
    done, dim = dict(manifest['videos']), manifest['dim']
    for part_path in sorted(directory.glob('manifest.process-*.json')):
        part = json.loads(part_path.read_text())
        done.update(part['videos'])
        dim = dim or part.get('dim')
    return done, dim


def _open_manifest(directory: pathlib.Path, encoder_fingerprint: str, image_size: int,
                   dtype: str) -> dict[str, Any]:
    manifest = read_manifest(directory)
    if manifest and manifest['encoder'] != encoder_fingerprint:
        raise ValueError(f'{directory / MANIFEST} was made by another encoder (fingerprint '
                         f'{manifest["encoder"]}, this one {encoder_fingerprint}); use another '
                         'features.cache_dir or delete that one')
    return manifest or {'encoder': encoder_fingerprint, 'dtype': dtype, 'dim': None,
                        'image_size': image_size, 'videos': {}, 'complete': False}


def encode_share(source: Sequence[dict[str, Any]], videos: Mapping[str, Mapping[str, np.ndarray]],
                 encode_fn: Callable[[np.ndarray], np.ndarray],
                 directory: str | os.PathLike, *, encoder_fingerprint: str, image_size: int,
                 batch_size: int = 256, dtype: str = 'float16', worker_count: int = 0,
                 shard: tuple[int, int] = (0, 1)) -> int:
    """Encode the unfinished videos (`videos`: `video_records(source)`) that `assign_videos` gives
    process `shard[0]` of `shard[1]`; each finished video is listed in that process's part
    manifest. Returns the number of frames encoded."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    index, count = shard
    manifest = _open_manifest(directory, encoder_fingerprint, image_size, dtype)
    owner = assign_videos(videos, count)
    done, _ = _finished(directory, manifest)
    todo = [v for v in videos if owner[v] == index and v not in done]
    if not todo:
        return 0
    part_path = directory / _part_name(index)
    part = json.loads(part_path.read_text()) if part_path.is_file() else {'videos': {}}
    order = np.concatenate([videos[v]['positions'] for v in todo])
    loader = grain.DataLoader(
        data_source=_Positions(source, order),
        sampler=grain.samplers.IndexSampler(len(order), shuffle=False, num_epochs=1,
                                            shard_options=grain.sharding.NoSharding()),
        operations=[PhaseEvalTransform(image_size),
                    grain.transforms.Batch(batch_size, drop_remainder=False)],
        worker_count=worker_count)
    pending = iter(todo)
    current = next(pending)
    parts: list[np.ndarray] = []
    have = 0
    label = f'encoding {directory.name}' + (f' (process {index}/{count})' if count > 1 else '')
    with tqdm(total=len(order), desc=label, unit='frame') as bar:
        for batch in loader:
            latent = encode_fn(np.asarray(batch['image'])).astype(dtype)
            bar.update(len(latent))
            while len(latent):
                need = len(videos[current]['phase']) - have
                parts.append(latent[:need])
                have += len(parts[-1])
                latent = latent[need:]
                if have == len(videos[current]['phase']):
                    _finish_video(directory, part_path, part, current, videos[current],
                                  np.concatenate(parts))
                    parts, have = [], 0
                    current = next(pending, None)
    return len(order)


def finish_cache(video_ids: Iterable[str], directory: str | os.PathLike, *,
                 encoder_fingerprint: str, image_size: int, dtype: str = 'float16'
                 ) -> dict[str, Any]:
    """Merge the part manifests into `manifest.json` and mark it complete (one process, after
    every process's `encode_share`); refuses when a video is still missing."""
    directory = pathlib.Path(directory)
    manifest = _open_manifest(directory, encoder_fingerprint, image_size, dtype)
    done, manifest['dim'] = _finished(directory, manifest)
    missing = sorted(set(video_ids) - set(done))
    if missing:
        raise RuntimeError(f'feature cache {directory} is missing {len(missing)} video(s) '
                           f'({missing[:5]}): rerun to encode them')
    manifest['videos'], manifest['complete'] = done, True
    _save_manifest(directory, manifest)
    for part in directory.glob('manifest.process-*.json'):
        part.unlink()
    log.info('feature cache %s: %d videos, %d frames', directory, len(done),
             sum(v['frames'] for v in done.values()))
    return manifest


def build_feature_cache(source: Sequence[dict[str, Any]],
                        encode_fn: Callable[[np.ndarray], np.ndarray],
                        directory: str | os.PathLike, *, encoder_fingerprint: str,
                        image_size: int, batch_size: int = 256, dtype: str = 'float16',
                        worker_count: int = 0) -> dict[str, Any]:
    """Encode every frame of `source` (no augmentation) into `directory` in this one process;
    resumes; returns the manifest. `encode_fn`: uint8 BGR (B, S, S, 3) -> (B, D) latents."""
    videos = video_records(source)
    encode_share(source, videos, encode_fn, directory, encoder_fingerprint=encoder_fingerprint,
                 image_size=image_size, batch_size=batch_size, dtype=dtype,
                 worker_count=worker_count)
    return finish_cache(videos, directory, encoder_fingerprint=encoder_fingerprint,
                        image_size=image_size, dtype=dtype)


def _finish_video(directory: pathlib.Path, part_path: pathlib.Path, part: dict[str, Any],
                  video_id: str, meta: Mapping[str, np.ndarray], latent: np.ndarray) -> None:
    """Write one video's file, then list it in this process's part manifest (both atomic, in that
    order), so a half-written video is never listed."""
    name = f'{video_id}.npz'
    write_atomic(directory / name, lambda f: np.savez(
        f, latent=latent, phase=meta['phase'], frame_index=meta['frame_index'],
        tools=meta['tools']))
    part['videos'][video_id] = {'file': name, 'frames': int(len(latent))}
    part['dim'] = int(latent.shape[1])
    write_text_atomic(part_path, json.dumps(part, indent=1))


def load_features(directory: str | os.PathLike, *, pooled_channels: int | None = None
                  ) -> dict[str, VideoFeatures]:
    """All videos of a complete cache split; `pooled_channels=C` averages the channel-major
    latent (C*h*w) over positions -> (T, C) (the pooled head's input)."""
    directory = pathlib.Path(directory)
    manifest = read_manifest(directory)
    if manifest is None or not manifest.get('complete'):
        raise FileNotFoundError(f'{directory} holds no complete feature cache '
                                f'({MANIFEST} missing or unfinished): build it first')
    out = {}
    for video_id, entry in sorted(manifest['videos'].items()):
        with np.load(directory / entry['file']) as data:
            latent = data['latent']
            if pooled_channels:
                latent = latent.reshape(len(latent), pooled_channels, -1).mean(-1, dtype=np.float32)
            out[video_id] = VideoFeatures(video_id, latent, data['phase'].astype(np.int32),
                                          data['frame_index'])
    return out
