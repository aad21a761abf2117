"""Frames of each video at a chosen rate, decoded by background threads into a bounded queue of
encoder-ready batches, so decoding overlaps the device work.

At 1 fps from a 25-fps video, 24 of 25 frames are never used: they are still decoded (later frames
may reference them), but frames that no other frame references are skipped by the decoder while
no sample is due, only sampled frames are converted to RGB, and they are resized on the decode
threads with the encoder's own bilinear weights (`jax.image.resize` without antialiasing, as the
`Encoder` does), so the device receives small uint8 frames. Which frames are sampled, their
timestamps and indices are those of `tfds_builders.video.sample_at_fps`.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import os
import queue
import threading
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from gsvit_jax.embed.inputs import ImageFolder, TfdsVideo, Video, VideoFile
from gsvit_jax.errors import describe
from tfds_builders.video import VideoReadError


@dataclasses.dataclass(frozen=True)
class Timeline:
    """Where a video's sampled frames are: one entry per frame, in time order."""

    timestamps_s: np.ndarray  # (N,) float64
    frame_indices: np.ndarray  # (N,) int64
    duration_s: float
    names: np.ndarray | None = None  # (N,) image file names, image folders only


@dataclasses.dataclass(frozen=True, eq=False)
class Frames:
    """A batch of one video's frames, uint8 RGB (B, size, size, 3), in time order."""

    video: Video
    images: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class Done:
    """A video whose frames have all been handed out as `Frames`, and where they are."""

    video: Video
    timeline: Timeline


@dataclasses.dataclass(frozen=True, eq=False)
class Unreadable:
    """A video that could not be read; `Frames` already handed out for it are to be dropped."""

    video: Video
    reason: str


class Sampler:
    """Keeps the first frame at or after each k/fps seconds (half a frame early allowed), like
    `tfds_builders.video.sample_at_fps`; every frame when `fps` is None."""

    def __init__(self, fps: float | None, frame_s: float):
        self.fps, self.slack, self.next_time = fps, 0.5 * frame_s, 0.0

    def due(self, time: float) -> bool:
        """Whether a frame at `time` would be kept now (nothing changes)."""
        return self.fps is None or time + self.slack >= self.next_time

    def take(self, time: float) -> bool:
        """Whether to keep the frame at `time` (frames come in time order)."""
        if not self.due(time):
            return False
        if self.fps is not None:
            self.next_time += 1.0 / self.fps
            while time + self.slack >= self.next_time:  # the source skipped ahead: stay on the grid
                self.next_time += 1.0 / self.fps
        return True


@functools.lru_cache(maxsize=64)
def _taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear resampling of one axis as `jax.image.resize(..., antialias=False)` does it: output
    pixel j samples input coordinate (j + 0.5) * size_in / size_out - 0.5, between two pixels,
    edges clamped. Returns (lower index, upper index, weight of the upper one)."""
    where = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
    lower = np.floor(where)
    weight = (where - lower).astype(np.float32)
    lower = lower.astype(np.int64)
    return np.clip(lower, 0, size_in - 1), np.clip(lower + 1, 0, size_in - 1), weight


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGBA (H, W, 4) -> uint8 RGB (size, size, 3): the `Encoder`'s own resize, rounded to
    uint8. Four bytes a pixel let numpy gather whole pixels as uint32 (several times faster than
    three); rows first, so the float work is on output-sized arrays only."""
    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return np.ascontiguousarray(image[..., :3])
    top, bottom, dy = _taps(height, size)
    left, right, dx = _taps(width, size)
    pixels = np.ascontiguousarray(image).view(np.uint32).reshape(height, width)

    def row_mix(rows: np.ndarray) -> np.ndarray:
        def pick(index: np.ndarray) -> np.ndarray:
            return np.take(rows, index, axis=1).view(np.uint8).reshape(size, size, 4).astype(
                np.float32)
        out = pick(left)
        out += (pick(right) - out) * dx[None, :, None]
        return out

    out = row_mix(pixels[top])
    out += (row_mix(pixels[bottom]) - out) * dy[:, None, None]
    return np.rint(out[..., :3]).astype(np.uint8)


def read_video_file(video: VideoFile, fps: float | None, size: int, threads: int = 0
                    ) -> Iterator[np.ndarray]:
    """Yield the sampled frames of a video file (RGB, resized); returns their `Timeline`.

    Frame indices count every frame of the stream (as `iter_frames` does): the rank of a frame's
    presentation time among all packets' when the container gives every packet one (mp4, mkv,
    avi, ...), so skipped frames are still counted; else the number of frames decoded before it.
    """
    import av
    try:
        container = av.open(str(video.path))
    except Exception as e:  # noqa: BLE001  any open failure means an unusable file
        raise VideoReadError(f'cannot open ({describe(e)})') from e
    with container:
        if not container.streams.video:
            raise VideoReadError('no video stream')
        stream = container.streams.video[0]
        stream.thread_type, stream.thread_count = 'AUTO', threads
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        sampler = Sampler(fps, 1.0 / rate)
        packet_pts: list[int] = []
        ranked = None  # whether packets carry times: decided by the first one
        kept_pts, times, counts = [], [], []
        last_packet_s = 0.0
        decoded = 0
        try:
            for packet in container.demux(stream):
                if packet.size and ranked is None:
                    ranked = packet.pts is not None
                skip = 'DEFAULT'
                if ranked and packet.pts is not None and packet.size:
                    packet_pts.append(packet.pts)
                    packet_s = float(packet.pts * packet.time_base)
                    last_packet_s = max(last_packet_s, packet_s)
                    if not sampler.due(packet_s + 1.0 / rate):  # not even a frame early
                        skip = 'NONREF'  # frames that no other frame references are not decoded
                if stream.codec_context.skip_frame != skip:
                    stream.codec_context.skip_frame = skip
                for frame in packet.decode():
                    time = frame.time if frame.time is not None else decoded / rate
                    if sampler.take(time):
                        kept_pts.append(frame.pts)
                        times.append(float(time))
                        counts.append(decoded)
                        yield resize(frame.to_ndarray(format='rgba'), size)
                    decoded += 1
        except av.FFmpegError as e:
            raise VideoReadError(f'decoding failed after {decoded} frames ({e})') from e
    if not times:
        raise VideoReadError('no decodable frames')
    if ranked and None not in kept_pts:
        indices = np.searchsorted(np.sort(np.array(packet_pts, np.int64)), kept_pts)
        end = last_packet_s + 1.0 / rate
    else:
        indices, end = counts, times[-1] + 1.0 / rate
    return Timeline(np.array(times, np.float64), np.asarray(indices, np.int64), end)


def _rgba(data: bytes | os.PathLike | str) -> np.ndarray:
    """An image file (path or encoded bytes) as uint8 RGBA; unreadable -> `VideoReadError`."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            return np.asarray(image.convert('RGBA'))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise VideoReadError(f'unreadable image ({describe(e)})') from e


def read_image_folder(video: ImageFolder, fps: float | None, size: int) -> Iterator[np.ndarray]:
    """Every image in file-name order as one frame each, 1/fps (or 1 s) apart."""
    for path in video.images:
        try:
            yield resize(_rgba(path), size)
        except VideoReadError as e:
            raise VideoReadError(f'{path.name}: {e}') from e
    period = 1.0 / (fps or 1.0)
    count = len(video.images)
    return Timeline(np.arange(count) * period, np.arange(count, dtype=np.int64), count * period,
                    np.array([p.name for p in video.images]))


def read_tfds_video(video: TfdsVideo, fps: float | None, size: int) -> Iterator[np.ndarray]:
    """The sampled records of one video of a prepared TFDS split (their JPEGs decoded)."""
    gaps = np.diff(video.timestamps_s)
    frame_s = float(np.median(gaps)) if len(gaps) else 0.0
    sampler = Sampler(fps, frame_s)
    kept = [i for i, time in enumerate(video.timestamps_s) if sampler.take(float(time))]
    for i in kept:
        yield resize(_rgba(video.records[int(video.positions[i])]['image']), size)
    return Timeline(video.timestamps_s[kept].astype(np.float64),
                    video.frame_indices[kept].astype(np.int64),
                    float(video.timestamps_s[-1]) + frame_s)


def read_frames(video: Video, fps: float | None, size: int, threads: int = 0
                ) -> Iterator[np.ndarray]:
    """The sampled frames of any kind of input (a generator returning its `Timeline`)."""
    if isinstance(video, VideoFile):
        return read_video_file(video, fps, size, threads)
    if isinstance(video, ImageFolder):
        return read_image_folder(video, fps, size)
    return read_tfds_video(video, fps, size)


class _Stopped(Exception):
    """The consumer went away: the worker ends."""


@dataclasses.dataclass(frozen=True)
class _Crashed:
    error: BaseException


class BackgroundDecoder:
    """Decodes videos on `workers` threads (one video per thread at a time, largest first as
    given) into a queue of at most `max_batches` batches; iterate for `Frames`, then `Done` or
    `Unreadable` per video. Use as a context manager: leaving it stops the threads."""

    def __init__(self, videos: Sequence[Video], *, fps: float | None, size: int,
                 batch_size: int, workers: int = 2, max_batches: int = 8):
        self._videos = list(videos)
        self._todo: queue.SimpleQueue[Video] = queue.SimpleQueue()
        for video in self._videos:
            self._todo.put(video)
        self._ready: queue.Queue = queue.Queue(maxsize=max_batches)
        self._stop = threading.Event()
        self._fps, self._size, self._batch_size = fps, size, batch_size
        workers = max(1, min(workers, len(self._videos)))
        self._codec_threads = max(1, (os.cpu_count() or 1) // workers)
        self._threads = [threading.Thread(target=self._work, name=f'gsvit-embed-decode-{i}',
                                          daemon=True) for i in range(workers)]

    def __enter__(self) -> 'BackgroundDecoder':
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def __iter__(self) -> Iterator[Frames | Done | Unreadable]:
        remaining = len(self._videos)
        while remaining:
            item = self._ready.get()
            if isinstance(item, _Crashed):
                raise item.error
            if not isinstance(item, Frames):
                remaining -= 1
            yield item

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    video = self._todo.get_nowait()
                except queue.Empty:
                    return
                self._put(self._decode(video))
        except _Stopped:
            return
        except BaseException as e:  # noqa: BLE001  a bug, not a bad video: the consumer raises it
            try:
                self._put(_Crashed(e))
            except _Stopped:
                pass

    def _decode(self, video: Video) -> Done | Unreadable:
        """Hand out `video`'s frames batch by batch; returns its last item."""
        frames = read_frames(video, self._fps, self._size, self._codec_threads)
        batch: list[np.ndarray] = []
        try:
            while True:
                try:
                    batch.append(next(frames))
                except StopIteration as end:
                    timeline = end.value
                    break
                if len(batch) == self._batch_size:
                    self._put(Frames(video, np.stack(batch)))
                    batch = []
        except VideoReadError as e:
            return Unreadable(video, str(e))
        finally:
            frames.close()  # a video left half-read (stopping) closes its file now
        if batch:
            self._put(Frames(video, np.stack(batch)))
        return Done(video, timeline)
