"""Embed videos into an output folder: decode in background threads, encode on this process's
devices, write one file per video, resume where a killed run stopped.

    encoder = gsvit_jax.load_encoder('GSViT.pkl')
    summary = embed(['videos/'], 'latents/', encoder, fps=1.0)

Several processes (`jax.distributed`) split the videos between them, each writes its own and
the first merges the manifest once all have finished; the output folder must be shared.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import time
from typing import Any, Sequence

import jax
import numpy as np
from tqdm import tqdm

from gsvit_jax import distributed
from gsvit_jax.embed.decode import BackgroundDecoder, Done, Frames
from gsvit_jax.embed.inputs import Video, find_videos
from gsvit_jax.embed.store import Settings, Store, check_folder, remove_partials
from gsvit_jax.models.efficientvit import VARIANTS, EfficientViT

log = logging.getLogger(__name__)
# How long the first process waits for the others to finish their videos before merging:
# their shares differ by up to one long video, which at every frame can take hours.
FINISH_TIMEOUT_S = 24 * 3600
PEER_TIMEOUT_S = 60  # a process silent this long is declared dead: the others stop (one line)


@dataclasses.dataclass(frozen=True)
class Summary:
    """What one process did; `skipped` covers every process in the first one (it merged)."""

    out_dir: pathlib.Path
    embedded: tuple[str, ...]  # names of the videos this process embedded now
    already_done: int  # this process's videos a previous run had finished
    skipped: tuple[dict[str, str], ...]  # {'source', 'reason'}
    frames: int
    seconds: float  # decoding, encoding and writing (compiling the encoder too, on first use)
    process: tuple[int, int] = (0, 1)

    def line(self) -> str:
        """One line for the end of a run: counts, speed, where, and every skipped video."""
        index, count = self.process
        who = f'process {index}/{count}: ' if count > 1 else ''
        videos = 'video' if len(self.embedded) == 1 else 'videos'
        text = (f'{who}{len(self.embedded)} {videos} embedded ({self.frames} frames in '
                f'{self.seconds:.1f} s), {self.already_done} already done, '
                f'{len(self.skipped)} skipped -> {self.out_dir}')
        if self.skipped:
            text += '; skipped: ' + '; '.join(f'{s["source"]} ({s["reason"]})'
                                              for s in self.skipped)
        return text


def variant_of(model: EfficientViT) -> str:
    """The name of the EfficientViT variant `model` is (what the manifest records)."""
    shape = (tuple(model.embed_dim), tuple(model.depth), tuple(model.num_heads),
             tuple(model.kernels))
    for name, variant in VARIANTS.items():
        if (variant.embed_dim, variant.depth, variant.num_heads, variant.kernels) == shape:
            return name
    return 'custom'


def settings_of(encoder: Any, *, output: str, dtype: str, fps: float | None) -> Settings:
    """The manifest settings of latents made by `encoder` (an `Encoder`)."""
    return Settings(encoder.fingerprint, encoder.source, variant_of(encoder.model),
                    encoder.img_size, output, dtype, fps)


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def assign_videos(videos: Sequence[Video], count: int) -> dict[str, int]:
    """name -> process, balanced by size (`distributed.split_work`)."""
    return distributed.split_work({video.name: video.size for video in videos}, count)


def embed(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, encoder: Any, *,
          fps: float | None = 1.0, output: str = 'latent', dtype: str = 'float16',
          data_dir: str | None = None, batch_size: int | None = None,
          workers: int | None = None, progress: bool = True) -> Summary:
    """Embed every video of `inputs` (video files, folders, `tfds:NAME/SPLIT` with `data_dir`)
    into `out_dir` with `encoder` (`gsvit_jax.load_encoder(...)`); see `embed_videos`."""
    return embed_videos(find_videos(inputs, data_dir), out_dir, encoder, fps=fps, output=output,
                        dtype=dtype, batch_size=batch_size, workers=workers, progress=progress)


def embed_videos(videos: Sequence[Video], out_dir: str | os.PathLike, encoder: Any, *,
                 fps: float | None = 1.0, output: str = 'latent', dtype: str = 'float16',
                 batch_size: int | None = None, workers: int | None = None,
                 progress: bool = True) -> Summary:
    """Sample `videos` at `fps` (None: every frame), encode them (`output` 'latent' or 'pooled',
    stored as `dtype`) and write `out_dir/<name>.npz` each plus the manifest. Videos finished
    by an earlier run with the same settings are kept; unreadable ones are skipped and listed.
    A folder made with other settings is refused (`UserError`)."""
    if encoder.channel_order != 'rgb':
        raise ValueError('embed decodes RGB frames: load the encoder with channel_order="rgb"')
    out_dir = pathlib.Path(out_dir)
    index, count = jax.process_index(), jax.process_count()
    settings = settings_of(encoder, output=output, dtype=dtype, fps=fps)
    done = check_folder(out_dir, settings, videos)
    store = Store(out_dir, settings, index)
    if index == 0:
        store.begin()
    owner = assign_videos(videos, count)
    mine = [v for v in videos if owner[v.name] == index]
    todo = sorted((v for v in mine if v.name not in done), key=lambda v: (-v.size, v.name))
    remove_partials(out_dir, (v.name for v in todo))
    encode = encoder.latent if output == 'latent' else encoder.pooled
    label = f' (process {index}/{count})' if count > 1 else ''
    with distributed.stop_if_peers_lost(peer_timeout_s=PEER_TIMEOUT_S):
        distributed.barrier('gsvit-embed folder ready', distributed.BARRIER_TIMEOUT_S)
        start = time.perf_counter()
        embedded, skipped, frames = _encode_all(
            todo, store, encode, fps=fps, size=encoder.img_size, dtype=dtype,
            batch_size=batch_size or encoder.batch_size, workers=workers or default_workers(),
            progress=progress, label=label)
        seconds = time.perf_counter() - start
        distributed.barrier('gsvit-embed videos written', FINISH_TIMEOUT_S)
        if index == 0:
            skipped = store.merge(videos)['skipped']
    return Summary(out_dir, tuple(embedded), len(mine) - len(todo), tuple(skipped), frames,
                   seconds, (index, count))


def _encode_all(videos: Sequence[Video], store: Store, encode: Any, *, fps: float | None,
                size: int, dtype: str, batch_size: int, workers: int, progress: bool,
                label: str) -> tuple[list[str], list[dict[str, str]], int]:
    """The loop: frames from the decode threads, encoded `batch_size` at a time (batches span
    videos, so only the run's last batch is short), each video saved once all its frames are
    encoded. Returns the names embedded, the skipped videos and the frame count."""
    if not videos:
        return [], [], 0
    batches = _Batches(encode, batch_size, dtype)
    ended: dict[str, Done] = {}
    embedded: list[str] = []
    skipped: list[dict[str, str]] = []
    frames = 0

    def save_finished(bar: tqdm) -> None:
        nonlocal frames
        for name in [n for n in ended if batches.complete(n)]:
            item = ended.pop(name)
            latents = batches.take(name)
            store.save(item.video, latents, item.timeline)
            embedded.append(name)
            frames += len(latents)
        bar.set_postfix_str(f'{len(embedded) + len(skipped)}/{len(videos)} videos')

    with BackgroundDecoder(videos, fps=fps, size=size, batch_size=batch_size,
                           workers=workers) as decoder, \
            tqdm(desc=f'embedding {len(videos)} videos{label}', unit='frame',
                 disable=not progress) as bar:
        for item in decoder:
            if isinstance(item, Frames):
                bar.update(batches.add(item.video.name, item.images))
            elif isinstance(item, Done):
                ended[item.video.name] = item
            else:
                batches.drop(item.video.name)
                log.warning('skipping %s: %s', item.video.source, item.reason)
                store.skip(item.video, item.reason)
                skipped.append({'source': item.video.source, 'reason': item.reason})
            save_finished(bar)
        bar.update(batches.flush())
        save_finished(bar)
    return embedded, skipped, frames


class _Batches:
    """Frames of any videos queued into full batches for `encode`; the latents go back to their
    video, in order. A short last batch is padded to full size: one compiled program only."""

    def __init__(self, encode: Any, batch_size: int, dtype: str):
        self._encode, self._batch_size, self._dtype = encode, batch_size, dtype
        self._images: list[np.ndarray] = []  # frames not encoded yet, in arrival order
        self._owners: list[tuple[str, int]] = []  # (video, frames) runs of `_images`
        self._waiting: dict[str, int] = {}  # video -> frames not encoded yet
        self._latents: dict[str, list[np.ndarray]] = {}
        self._dropped: set[str] = set()

    def add(self, name: str, images: np.ndarray) -> int:
        """Queue a video's next frames; encode every full batch. Returns frames encoded."""
        self._images.append(images)
        self._owners.append((name, len(images)))
        self._waiting[name] = self._waiting.get(name, 0) + len(images)
        done = 0
        while sum(len(i) for i in self._images) >= self._batch_size:
            done += self._run(self._batch_size)
        return done

    def flush(self) -> int:
        """Encode what is left (padded to a full batch). Returns frames encoded."""
        return self._run(sum(len(i) for i in self._images)) if self._images else 0

    def drop(self, name: str) -> None:
        """Forget a video (its frames still queued are encoded, their latents thrown away)."""
        self._dropped.add(name)
        self._latents.pop(name, None)

    def complete(self, name: str) -> bool:
        return self._waiting.get(name, 0) == 0

    def take(self, name: str) -> np.ndarray:
        """All latents of a complete video, (N, D) in frame order."""
        self._waiting.pop(name, None)
        return np.concatenate(self._latents.pop(name))

    def _run(self, count: int) -> int:
        queued = np.concatenate(self._images)
        batch, rest = queued[:count], queued[count:]
        self._images = [rest] if len(rest) else []
        pad = self._batch_size - len(batch)
        padded = np.concatenate([batch, np.repeat(batch[-1:], pad, axis=0)]) if pad else batch
        latents = np.asarray(self._encode(padded)[:count], self._dtype)
        start = 0
        while start < count:
            name, frames = self._owners[0]
            used = min(frames, count - start)
            if name not in self._dropped:
                self._latents.setdefault(name, []).append(latents[start:start + used])
            self._waiting[name] -= used
            self._owners[0] = (name, frames - used)
            if used == frames:
                self._owners.pop(0)
            start += used
        return count
