"""Phase-recognition inputs: Cholec80 frame sources, feature caches and deterministic batches.

Batches are a pure function of (seed, step), so a resumed run sees exactly the batches the
uninterrupted run would have seen without any iterator state in the checkpoint.
"""
from __future__ import annotations

import logging
import pathlib
from typing import Callable, Mapping, Sequence

import jax
import numpy as np
from ml_collections import ConfigDict

from gsvit_jax.data.demo_cholec80 import build_demo_cholec80
from gsvit_jax.data.frames import check_prepared, open_frames, open_prepared
from gsvit_jax import distributed
from gsvit_jax.phase.features import (VideoFeatures, encode_share, finish_cache, load_features,
                                      read_manifest, video_records)

log = logging.getLogger(__name__)


def dataset_name(config: ConfigDict) -> str:
    """Identifies the frames (not the split convention): cache folders are keyed by it."""
    if config.get('demo_videos'):
        return (f'demo_cholec80_{config.demo_videos}_{config.demo_seconds}s_{config.image_size}'
                f'_m{round(100 * config.demo_misleading)}')
    return f'{config.name}_{config.builder_config}'


def check_data(config: ConfigDict) -> None:
    """The configured Cholec80 split convention is prepared (the demo builds its own data)."""
    if not config.get('demo_videos'):
        check_prepared(f'{config.name}/{config.builder_config}', config.data_dir,
                       'data.name/data.builder_config', 'cholec80/40_40')


def open_split(config: ConfigDict, split: str, workdir: str | pathlib.Path, *,
               barrier_timeout_s: float = distributed.BARRIER_TIMEOUT_S) -> Sequence[dict]:
    """Random-access frames of `split` (JPEG left encoded): TFDS `cholec80/<config>` or, with
    `demo_videos`, a generated Cholec80-layout dataset built once (under `demo_root`, by default
    the workdir; by process 0 while the others wait)."""
    if config.get('demo_videos'):
        train = range(1, config.demo_videos + 1)
        test = range(41, 41 + config.demo_test_videos)
        root = config.get('demo_root') or pathlib.Path(workdir) / 'demo_data'
        builder_dir = distributed.first_process_then_all(
            'demo cholec80', lambda: build_demo_cholec80(
                root, train_videos=train, test_videos=test, seconds=config.demo_seconds,
                image_size=config.image_size, misleading=config.demo_misleading),
            barrier_timeout_s)
        return open_prepared(builder_dir, split)
    return open_frames(f'{config.name}/{config.builder_config}', split, config.data_dir or None)


def cached_split(config: ConfigDict, workdir: str | pathlib.Path, split: str,
                 encode_fn: Callable[[np.ndarray], np.ndarray], encoder_fingerprint: str,
                 pooled_channels: int | None) -> dict[str, VideoFeatures]:
    """Latents of every frame of `split`, encoded once into the feature cache. With several
    processes each encodes its share of the videos and process 0 completes the manifest; the
    cache directory must be shared between hosts."""
    features = config.features
    root = pathlib.Path(features.cache_dir or pathlib.Path(workdir) / 'features')
    directory = root / dataset_name(config.data) / encoder_fingerprint / split
    if not (read_manifest(directory) or {}).get('complete'):
        wait = distributed.settings(config).barrier_timeout_s
        source = open_split(config.data, split, workdir, barrier_timeout_s=wait)
        videos = video_records(source)
        encode_share(source, videos, encode_fn, directory,
                     encoder_fingerprint=encoder_fingerprint, image_size=config.data.image_size,
                     batch_size=features.batch_size, dtype=features.dtype,
                     worker_count=config.data.worker_count,
                     shard=(jax.process_index(), jax.process_count()))
        distributed.barrier(f'feature cache {split} encoded', wait)
        if jax.process_index() == 0:
            finish_cache(videos, directory, encoder_fingerprint=encoder_fingerprint,
                         image_size=config.data.image_size, dtype=features.dtype)
        distributed.barrier(f'feature cache {split} complete', wait)
    return load_features(directory, pooled_channels=pooled_channels)


def stack_frames(videos: Mapping[str, VideoFeatures]) -> tuple[np.ndarray, np.ndarray]:
    """All frames of all videos: latents (N, D) and labels (N,)."""
    return (np.concatenate([v.latent for v in videos.values()]),
            np.concatenate([v.phase for v in videos.values()]).astype(np.int32))


def frame_batch(latents: np.ndarray, labels: np.ndarray, step: int, batch_size: int,
                seed: int) -> dict[str, np.ndarray]:
    """Global batch `step` (0-based) of shuffled frames, this process's share."""
    share = batch_size // jax.process_count()
    start = step * batch_size + jax.process_index() * share
    index = _stream(len(labels), seed, start, share)
    return {'latent': latents[index].astype(np.float32), 'phase': labels[index]}


def _stream(count: int, seed: int, start: int, size: int) -> np.ndarray:
    """Items start..start+size-1 of an endless stream of seeded permutations of range(count)."""
    positions = np.arange(start, start + size)
    epochs, offsets = np.divmod(positions, count)
    out = np.empty(size, np.int64)
    for epoch in np.unique(epochs):
        perm = np.random.default_rng([seed, int(epoch)]).permutation(count)
        sel = epochs == epoch
        out[sel] = perm[offsets[sel]]
    return out


def padded_length(length: int, multiple: int = 64) -> int:
    return -(-length // multiple) * multiple


def video_batch(videos: Sequence[VideoFeatures], step: int, batch_videos: int, seed: int,
                length: int) -> dict[str, np.ndarray]:
    """Global batch `step` of whole videos (shuffled each epoch), end-padded to `length` with a
    mask; this process's share."""
    share = batch_videos // jax.process_count()
    start = step * batch_videos + jax.process_index() * share
    index = _stream(len(videos), seed, start, share)
    dim = videos[0].latent.shape[1]
    latent = np.zeros((share, length, dim), np.float32)
    phase = np.zeros((share, length), np.int32)
    mask = np.zeros((share, length), np.float32)
    for row, i in enumerate(index):
        video = videos[int(i)]
        t = min(len(video), length)
        latent[row, :t], phase[row, :t], mask[row, :t] = video.latent[:t], video.phase[:t], 1
    return {'latent': latent, 'phase': phase, 'mask': mask}
