"""GenSurgery: frames of the YouTube surgery videos GSViT was pre-trained on, as a TFDS dataset.

Only the URL lists are public (27 `<category>.txt` files, fetched here at a pinned commit and
checksummed); the videos come from the manual dir (see `download.py`). Each readable video gives
one example per sampled frame (config fps, default 1: the paper predicts 1 s ahead), resized and
JPEG-encoded. Examples are stored in key order (`example_key`: by video ID, then frame index), so
a video's frames are contiguous and in time order. Videos are split train/validation by a hash
of their ID.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from typing import Any, Iterator, Sequence

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import video
from tfds_builders.generation import KeyExample, PerVideoBuilderMixin
from tfds_builders.gensurgery import url_lists

log = logging.getLogger(__name__)

MISSING_REPORT = 'missing_videos.json'
OVERRIDE_LISTS = 'url_lists'  # <manual_dir>/url_lists/*.txt replaces the pinned lists
_ID_DIGITS = '-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz'  # ASCII order
_FRAME_BITS = 24  # 16.7 M frames: 77 hours at 60 fps


@dataclasses.dataclass(eq=False)
class BuilderConfig(tfds.core.BuilderConfig):
    """Sampling rate (frames per second of video), output size (side or (height, width)) and
    the share of videos, in percent, that go to `validation`."""

    fps: float = 1.0
    image_size: int | tuple[int, int] = 224
    validation_percent: float = 5.0


@dataclasses.dataclass(frozen=True)
class VideoTask:
    """Everything a worker needs to turn one video file into examples (picklable)."""

    video_id: str
    path: str
    source: str  # path relative to the manual dir, for reports
    categories: tuple[str, ...]
    category: str
    fps: float
    image_size: int | tuple[int, int]


def example_key(video_id: str, frame_index: int) -> int:
    """Stable integer key that sorts like (video_id, frame_index).

    TFDS needs integer keys (< 2**128) when shuffling is disabled, with Beam and once a split
    outgrows memory: the ID is read as a base-64 number (digits in ASCII order, so keys sort
    like IDs), times 2**24, plus the frame index.
    """
    if not 0 <= frame_index < 2 ** _FRAME_BITS:
        raise ValueError(f'frame index {frame_index} of {video_id} exceeds {_FRAME_BITS} bits')
    number = 0
    for char in video_id:
        number = number * 64 + _ID_DIGITS.index(char)
    return (number << _FRAME_BITS) | frame_index


def process_video(task: VideoTask) -> list[KeyExample]:
    """All examples of one video (raises `VideoReadError` if any part of it cannot be decoded)."""
    return [(example_key(task.video_id, index), {
        'image': video.encode_jpeg(image, task.image_size),
        'video_id': task.video_id,
        'frame_index': index,
        'timestamp_s': time,
        'category': task.category,
        'categories': list(task.categories),
    }) for index, time, image in video.sample_at_fps(task.path, task.fps)]


def task_name(task: VideoTask) -> str:
    return task.source


def split_bucket(video_id: str) -> int:
    """Stable 0..99 bucket of a video ID (sha256), independent of which other videos exist."""
    return int(hashlib.sha256(video_id.encode()).hexdigest(), 16) % 100


def assign_splits(video_ids: Sequence[str], validation_percent: float) -> dict[str, list[str]]:
    """Validation = IDs whose bucket < validation_percent; the rest is train.

    So that a small manual dir still validates on something: if that leaves validation empty
    although validation_percent > 0 and there are at least two videos, the video with the lowest
    (bucket, ID) moves to validation. With the full dataset this never triggers.
    """
    validation = sorted(v for v in video_ids if split_bucket(v) < validation_percent)
    if not validation and validation_percent > 0 and len(video_ids) > 1:
        validation = [min(video_ids, key=lambda v: (split_bucket(v), v))]
    train = sorted(set(video_ids) - set(validation))
    return {'train': train, 'validation': validation}


class Builder(PerVideoBuilderMixin, tfds.core.GeneratorBasedBuilder):
    """GenSurgery frames from a manual dir of downloaded videos."""

    VERSION = tfds.core.Version('1.0.0')
    RELEASE_NOTES = {'1.0.0': 'Initial release.'}
    BUILDER_CONFIGS = [BuilderConfig(name='1fps_224', fps=1.0, image_size=224,
                                     description='1 frame per second, 224x224.')]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download the videos from YouTube (needs the `download` extra: pip install -e ".[download]"):

        python -m tfds_builders.gensurgery.download --out DIR

    then build with `--manual_dir=DIR` (or use DIR = ~/tensorflow_datasets/downloads/manual).
    Videos are matched by the 11-character YouTube ID in their file name, in any subfolder:
    `<id>.<ext>` (this downloader), `<id>.<title>.<ext>` and `watch?v=<id>.<title>.<ext>` (the
    original GSViT script; `#` for `?` too); mp4, webm, mkv, mov or avi. Missing videos (link rot)
    are listed in missing_videos.json and do not stop the build. A `url_lists/` folder of
    `<category>.txt` files in DIR replaces the pinned URL lists (offline builds, subsets).
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
                'video_id': tfds.features.Text(),
                'frame_index': np.int64,
                'timestamp_s': np.float32,
                'category': tfds.features.ClassLabel(names=url_lists.CATEGORIES),
                'categories': tfds.features.Sequence(
                    tfds.features.ClassLabel(names=url_lists.CATEGORIES)),
            }),
            homepage='https://github.com/SamuelSchmidgall/GSViT',
            disable_shuffling=True,  # key order: frames of a video are adjacent, in time order
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        manual_dir = epath.Path(dl_manager.manual_dir)
        lists = self._url_lists(dl_manager, manual_dir)
        unknown = lists.category_names - set(url_lists.CATEGORIES)
        if unknown:
            raise ValueError(f'URL lists with unknown categories {sorted(unknown)}; the '
                             f'categories are {url_lists.CATEGORIES}')
        files, duplicates = url_lists.find_videos(manual_dir)
        found = {v: files[v] for v in lists.ids if v in files}
        self._write_missing_report(manual_dir, lists, files, duplicates)
        if not found:
            raise FileNotFoundError(
                f'No GenSurgery video found in the manual dir {manual_dir} ({len(files)} video '
                f'files with an ID in their name, none of them listed). Download them with:\n'
                f'  python -m tfds_builders.gensurgery.download --out {manual_dir}')
        config = self.builder_config
        generators = {}
        for split, ids in assign_splits(sorted(found), config.validation_percent).items():
            if not ids:
                log.warning('split %r has no video and is left out', split)
                continue
            tasks = [VideoTask(v, str(manual_dir / found[v]), found[v], lists.categories[v],
                               lists.primary(v), config.fps, config.image_size) for v in ids]
            generators[split] = self._generate_examples(tasks=tasks, split=split)
        return generators

    def _generate_examples(self, tasks: Sequence[VideoTask], split: str):
        examples = self._per_video_examples(tasks, process_video, split=split,
                                            task_name=task_name)
        return examples if self._use_beam else _require_examples(examples, split, len(tasks))

    def _url_lists(self, dl_manager, manual_dir: epath.Path) -> url_lists.UrlLists:
        override = manual_dir / OVERRIDE_LISTS
        if override.is_dir() and list(override.glob('*.txt')):
            lists = url_lists.read_list_dir(override)
            log.info('using the URL lists in %s instead of the pinned release', override)
        else:
            lists = url_lists.read_lists(dl_manager.download(url_lists.URLS))
        log.info('GenSurgery URL lists: %s', lists.summary())
        return lists

    def _write_missing_report(self, manual_dir: epath.Path, lists: url_lists.UrlLists,
                              files: dict[str, str], duplicates: dict[str, list[str]]) -> None:
        """Atomically write missing_videos.json next to the data and log a summary."""
        # imported here so that `python -m tfds_builders.gensurgery.download` runs it only once
        from tfds_builders.gensurgery import download
        status = download.read_status(manual_dir / download.STATUS_FILE)
        missing = [v for v in lists.ids if v not in files]
        unlisted = sorted(files[v] for v in set(files) - set(lists.categories))
        body = {
            'manual_dir': str(manual_dir),
            'listed_videos': len(lists.categories),
            'found_videos': len(lists.categories) - len(missing),
            'missing_videos': len(missing),
            'missing': [{'video_id': v, 'categories': list(lists.categories[v]),
                         **_download_status(status.get(v))} for v in missing],
            'malformed_lines': [dataclasses.asdict(ref) for ref in lists.malformed],
            'unlisted_files': unlisted,
            'duplicate_files': duplicates,
        }
        path = self.data_path / MISSING_REPORT
        self.data_path.mkdir(parents=True, exist_ok=True)
        tmp = self.data_path / f'.{MISSING_REPORT}.tmp'
        tmp.write_text(json.dumps(body, indent=2))
        tmp.replace(path)
        odd = missing or lists.malformed or unlisted or duplicates  # worth a warning
        log.log(logging.WARNING if odd else logging.INFO,
                'GenSurgery: %d of %d listed videos found in %s; %d missing (link rot is '
                'expected), %d malformed URL line(s) (%s), %d unlisted and %d duplicated '
                'file(s); details in %s', body['found_videos'], body['listed_videos'],
                manual_dir, len(missing), len(lists.malformed),
                ', '.join(map(str, lists.malformed)) or 'none', len(unlisted),
                len(duplicates), self.final_data_path / MISSING_REPORT)


def _download_status(entry: tuple[str, str, str] | None) -> dict[str, str]:
    """What the downloader's status.tsv says about a missing video (nothing if it has no line)."""
    if entry is None:
        return {}
    status, reason, timestamp = entry
    return {'download_status': status, 'reason': reason, 'checked_at': timestamp}


def _require_examples(examples: Iterator[KeyExample], split: str,
                      num_videos: int) -> Iterator[KeyExample]:
    """Pass examples through; fail clearly (not in the writer) if the split produced none."""
    produced = False
    for example in examples:
        produced = True
        yield example
    if not produced:
        raise RuntimeError(f'split {split!r}: none of its {num_videos} video(s) could be decoded '
                           '(the log says why for each); add readable videos or change '
                           'validation_percent')
