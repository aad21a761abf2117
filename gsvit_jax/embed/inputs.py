"""What to embed: video files, folders of videos and images (searched recursively) and the videos
of prepared TFDS splits, each named by the path it will have in the output folder.

A video's name is its path relative to the folder it was found in (its file name when given
alone); a folder of images is one video named like its folder. Names must be unique, since each
becomes `OUT/<name>.npz`.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Iterable, Sequence

import numpy as np

from gsvit_jax.errors import UserError, describe

TFDS_PREFIX = 'tfds:'
VIDEO_SUFFIXES = frozenset({'.mp4', '.m4v', '.mov', '.avi', '.mkv', '.webm', '.mpg', '.mpeg',
                            '.wmv', '.flv', '.ts', '.mts', '.m2ts', '.3gp', '.ogv'})
IMAGE_SUFFIXES = frozenset({'.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp'})


@dataclasses.dataclass(frozen=True, eq=False)
class Video:
    """One unit of work, written to `OUT/<name>.npz`."""

    name: str  # the path it was found under, relative to its input folder
    source: str  # what the manifest records: an absolute path or tfds:NAME/SPLIT#VIDEO
    size: int  # how much work it is (bytes or frames): balances the processes


@dataclasses.dataclass(frozen=True, eq=False)
class VideoFile(Video):
    path: pathlib.Path


@dataclasses.dataclass(frozen=True, eq=False)
class ImageFolder(Video):
    """The images directly in one folder, one frame each in file-name order."""

    images: tuple[pathlib.Path, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class TfdsVideo(Video):
    """One video of a prepared TFDS frame dataset: its records in time order."""

    records: Sequence[dict[str, Any]]  # the split's random-access source
    positions: np.ndarray  # (N,) record positions
    timestamps_s: np.ndarray  # (N,)
    frame_indices: np.ndarray  # (N,)


def find_videos(inputs: Iterable[str | os.PathLike], data_dir: str | None = None) -> list[Video]:
    """Every video of `inputs` (files, folders, `tfds:NAME/SPLIT`), sorted by name; a missing
    input, an input holding nothing to embed or two videos with one name is a `UserError`."""
    videos: dict[str, Video] = {}
    for item in inputs:
        text = os.fspath(item)
        found = (tfds_videos(text[len(TFDS_PREFIX):], data_dir) if text.startswith(TFDS_PREFIX)
                 else path_videos(pathlib.Path(text)))
        for video in found:
            if video.name in videos and videos[video.name].source == video.source:
                continue  # the same video, given twice
            if video.name in videos:
                raise UserError(f'two inputs would both be written as {video.name}.npz: '
                                f'{videos[video.name].source} and {video.source}; embed them into '
                                'different --out folders')
            videos[video.name] = video
    return [videos[name] for name in sorted(videos)]


def path_videos(path: pathlib.Path) -> list[Video]:
    """A video file, an image file (a one-frame video) or a folder searched recursively."""
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return [ImageFolder(path.name, str(path.resolve()), path.stat().st_size, (path,))]
        return [VideoFile(path.name, str(path.resolve()), path.stat().st_size, path)]
    if not path.is_dir():
        raise UserError(f'{path}: no such file or folder')
    found = folder_videos(path)
    if not found:
        raise UserError(f'{path}: no videos or images found in it or its subfolders (looked for '
                        f'{", ".join(sorted(VIDEO_SUFFIXES | IMAGE_SUFFIXES))})')
    return found


def folder_videos(root: pathlib.Path) -> list[Video]:
    """Video files under `root` (names relative to it) and one `ImageFolder` per folder that
    directly holds images (named by its path under `root`; `root` itself by its own name).
    Hidden files and folders are ignored."""
    found: list[Video] = []
    for folder, subfolders, files in os.walk(root, followlinks=True):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith('.'))
        here = pathlib.Path(folder)
        images = []
        for name in sorted(f for f in files if not f.startswith('.')):
            path = here / name
            suffix = path.suffix.lower()
            if suffix in VIDEO_SUFFIXES:
                found.append(VideoFile(path.relative_to(root).as_posix(), str(path.resolve()),
                                       path.stat().st_size, path))
            elif suffix in IMAGE_SUFFIXES:
                images.append(path)
        if images:
            name = here.relative_to(root).as_posix()
            name = root.resolve().name if name == '.' else name
            found.append(ImageFolder(name, str(here.resolve()),
                                     sum(p.stat().st_size for p in images), tuple(images)))
    return found


def tfds_videos(spec: str, data_dir: str | None) -> list[Video]:
    """The videos of a prepared split `NAME/SPLIT` (NAME may hold a config: `cholec80/40_40`),
    grouped by `video_id` and ordered by `timestamp_s`."""
    import tfds_builders  # noqa: F401  registers cholec80 and gensurgery (default configs)
    from gsvit_jax.data.frames import FrameTable, open_frames
    name, _, split = spec.rpartition('/')
    if not name or not split:
        raise UserError(f'{TFDS_PREFIX}{spec}: expected {TFDS_PREFIX}NAME/SPLIT, e.g. '
                        f'{TFDS_PREFIX}cholec80/test or {TFDS_PREFIX}cholec80/40_8_32/test')
    try:
        records = open_frames(name, split, data_dir)
    except Exception as e:  # noqa: BLE001  TFDS raises many kinds for a missing dataset
        where = f' in --data-dir {data_dir}' if data_dir else ''
        raise UserError(f'{TFDS_PREFIX}{spec}: no prepared split{where} ({describe(e)}); build '
                        'it first with python -m tfds_builders.build') from e
    table = FrameTable.cached(records)
    return [TfdsVideo(video_id, f'{TFDS_PREFIX}{spec}#{video_id}', len(positions), records,
                      positions, table.timestamp_s[positions], table.frame_index[positions])
            for video_id, positions in table.videos().items()]
