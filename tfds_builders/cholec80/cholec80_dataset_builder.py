"""Cholec80 TFDS builder: 1-fps frames of the 80 cholecystectomy videos with phase and tool labels.

Manual download (see `MANUAL_DOWNLOAD_INSTRUCTIONS`). One example per frame whose 25-fps index is a
multiple of 25 (the frames the tool annotation covers). A config fixes the split convention
(split name -> video numbers) and the stored image size. Annotations are parsed up front, so a
malformed annotation stops the build before any video is decoded; an unreadable or absent video
is skipped and listed in `skipped_videos_<split>.json` next to the prepared data.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders.cholec80.annotations import (FPS, PHASES, TOOL_STEP, TOOLS, ToolAnnotations,
                                                read_phases, read_tools, video_name)
from tfds_builders.generation import KeyExample, PerVideoBuilderMixin, write_report
from tfds_builders.video import VideoReadError, encode_jpeg, frame_rate, iter_frames

log = logging.getLogger(__name__)

NUM_VIDEOS = 80
HOMEPAGE = 'https://camma.unistra.fr/datasets/'
LAYOUT = """\
  videos/video01.mp4 ... videos/video80.mp4                        (25 fps)
  phase_annotations/video01-phase.txt ... phase_annotations/video80-phase.txt
  tool_annotations/video01-tool.txt ... tool_annotations/video80-tool.txt"""

# The three split conventions of the literature (see README.md): split -> video numbers.
SPLIT_CONVENTIONS: dict[str, dict[str, range]] = {
    '40_40': {'train': range(1, 41), 'test': range(41, 81)},
    '40_8_32': {'train': range(1, 41), 'validation': range(41, 49), 'test': range(49, 81)},
    '32_8_40': {'train': range(1, 33), 'validation': range(33, 41), 'test': range(41, 81)},
}
_DESCRIPTIONS = {
    '40_40': 'train videos 1-40, test 41-80 (EndoNet, TMRNet, Trans-SVNet, Surgformer).',
    '40_8_32': 'train videos 1-40, validation 41-48, test 49-80 (TeCNO, EndoViT, endossl).',
    '32_8_40': 'train videos 1-32, validation 33-40, test 41-80.',
}


@dataclasses.dataclass(eq=False)
class Cholec80Config(tfds.core.BuilderConfig):
    """Split convention and image size; pass a custom one to `tfds.builder(..., config=...)`.

    Attributes:
      splits: split name -> video numbers (1..80); splits must not share a video.
      image_size: (height, width) of the stored JPEGs; None keeps the source resolution.
    """

    splits: Mapping[str, Sequence[int]] = dataclasses.field(
        default_factory=lambda: dict(SPLIT_CONVENTIONS['40_40']))
    image_size: tuple[int, int] | None = (256, 256)

    def __post_init__(self):
        seen: dict[int, str] = {}
        for split, numbers in self.splits.items():
            for number in numbers:
                if not 1 <= number <= NUM_VIDEOS:
                    raise ValueError(f'config {self.name}: video {number} in split {split} is '
                                     f'outside 1..{NUM_VIDEOS}')
                if number in seen:
                    raise ValueError(f'config {self.name}: video {number} is in both split '
                                     f'{seen[number]} and split {split}')
                seen[number] = split


@dataclasses.dataclass(frozen=True)
class VideoTask:
    """One video's work for `process_video` (picklable; labels already parsed)."""

    video_id: str
    video_path: str
    phases: np.ndarray | None  # (phase rows,) indices into PHASES; None when the video is absent
    tools: ToolAnnotations | None
    image_size: tuple[int, int] | None


def _task_name(task: VideoTask) -> str:
    return task.video_id


def _num_examples(task: VideoTask, num_frames: int) -> int:
    """1-fps frames covered by the video, the phase rows and the tool rows; logs any mismatch."""
    num_phases, num_tools = len(task.phases), len(task.tools.frames)
    count = min(-(-num_frames // FPS), -(-num_phases // FPS), num_tools)
    if num_frames != num_phases or num_tools != -(-num_phases // TOOL_STEP):
        log.warning('%s: lengths differ: video %d frames, phase annotation %d frames, tool '
                    'annotation %d rows; keeping the %d 1-fps frames all three cover',
                    task.video_id, num_frames, num_phases, num_tools, count)
    return count


def process_video(task: VideoTask) -> list[KeyExample]:
    """Decode the whole video and return the examples of its 1-fps frames, clipped to the labels.

    Raises `VideoReadError` for an absent, unreadable, truncated or empty video (nothing of it is
    kept). Module-level so worker processes can unpickle it.
    """
    path = pathlib.Path(task.video_path)
    if not path.is_file():
        raise VideoReadError(f'{path}: not found (listed in the split, absent from videos/)')
    limit = min(len(task.phases), len(task.tools.frames) * TOOL_STEP)
    images: dict[int, bytes] = {}
    num_frames = 0
    for index, _, image in iter_frames(path):  # every frame: the count must be exact
        num_frames = index + 1
        if index % FPS == 0 and index < limit:
            images[index] = encode_jpeg(image, task.image_size)
    rate = frame_rate(path)
    if abs(rate - FPS) > 0.01:
        log.warning('%s: %.3f fps, expected %d: labels are indexed by frame, not time',
                    task.video_id, rate, FPS)
    examples = []
    for k in range(_num_examples(task, num_frames)):
        index = k * FPS
        examples.append((f'{task.video_id}_{index:06d}', {
            'image': images[index],
            'video_id': task.video_id,
            'frame_index': index,
            'timestamp_s': np.float32(index / FPS),
            'phase': PHASES[task.phases[index]],
            'tools': task.tools.present[k],
        }))
    return examples


def manual_root(manual_dir: pathlib.Path) -> pathlib.Path | None:
    """The folder holding `videos/`: `manual_dir` itself or its `cholec80/` sub-folder."""
    for root in (manual_dir, manual_dir / 'cholec80'):
        if (root / 'videos').is_dir():
            return root
    return None


def _manual_root(manual_dir: pathlib.Path) -> pathlib.Path:
    root = manual_root(manual_dir)
    if root is not None:
        return root
    raise FileNotFoundError(f'No videos/ folder in the manual dir {manual_dir}. Expected layout '
                            f'under it (or under {manual_dir}/cholec80/):\n{LAYOUT}')


def _annotation_path(root: pathlib.Path, folder: str, name: str, suffix: str) -> pathlib.Path:
    path = root / folder / f'{name}-{suffix}.txt'
    if not path.is_file():
        raise FileNotFoundError(f'{path} not found: every video needs its {suffix} annotation. '
                                f'Expected layout under {root}:\n{LAYOUT}')
    return path


class Builder(PerVideoBuilderMixin, tfds.core.GeneratorBasedBuilder):
    """Cholec80 (Twinanda et al., 2017) at 1 fps: frame, phase, tool presence."""

    VERSION = tfds.core.Version('1.0.0')
    RELEASE_NOTES = {'1.0.0': 'Initial release: 1-fps JPEG frames, phase and tool labels.'}
    BUILDER_CONFIGS = [
        Cholec80Config(name=name, description=_DESCRIPTIONS[name], splits=splits)
        for name, splits in SPLIT_CONVENTIONS.items()
    ]
    DEFAULT_BUILDER_CONFIG_NAME = '40_40'
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Cholec80 is distributed on request by the CAMMA team (University of Strasbourg / IHU Strasbourg)
under CC BY-NC-SA 4.0: fill in the request form linked from {HOMEPAGE}
Put the release into the manual dir (default <data_dir>/downloads/manual/; a cholec80/ folder
around the three folders also works) so that it holds:
{LAYOUT}
Other files (e.g. videos/videoNN-timestamp.txt) are ignored. Videos absent from a partial copy are
skipped and listed in skipped_videos_<split>.json in the prepared dataset's folder.
"""

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg',
                                             doc='RGB frame, resized to the config image_size'),
                'video_id': tfds.features.Text(doc='source video, e.g. video01'),
                'frame_index': tfds.features.Scalar(np.int64, doc='index in the 25-fps video'),
                'timestamp_s': tfds.features.Scalar(np.float32, doc='frame_index / 25'),
                'phase': tfds.features.ClassLabel(names=PHASES, doc='surgical phase'),
                'tools': tfds.features.Tensor(shape=(len(TOOLS),), dtype=np.bool_,
                                              doc='presence of ' + ', '.join(TOOLS)),
            }),
            supervised_keys=('image', 'phase'),
            homepage=HOMEPAGE,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        """One generator per split of the config; parses every present video's labels first."""
        root = _manual_root(pathlib.Path(dl_manager.manual_dir))
        config: Cholec80Config = self.builder_config
        present = {n for numbers in config.splits.values() for n in numbers
                   if (root / 'videos' / f'{video_name(n)}.mp4').is_file()}
        if not present:
            raise FileNotFoundError(
                f'No video of config {config.name} found in {root / "videos"} (looked for '
                f'videoNN.mp4 with NN in its splits). Expected layout under {root}:\n{LAYOUT}')
        generators = {}
        for split, numbers in config.splits.items():
            if present.isdisjoint(numbers):  # TFDS cannot write an empty split: leave it out
                log.warning('split %s left out: none of its %d videos is in %s', split,
                            len(numbers), root / 'videos')
                write_report(self.data_path, split, len(numbers),
                             [(video_name(n), 'not found') for n in numbers])
                continue
            tasks = [self._task(root, n) for n in numbers]
            generators[split] = self._generate_examples(tasks=tasks, split=split)
        return generators

    def _task(self, root: pathlib.Path, number: int) -> VideoTask:
        """Parse the labels of one video (a malformed file stops the build here)."""
        name = video_name(number)
        video = root / 'videos' / f'{name}.mp4'
        size = self.builder_config.image_size
        if not video.is_file():
            return VideoTask(name, str(video), None, None, size)
        phases = read_phases(_annotation_path(root, 'phase_annotations', name, 'phase'))
        tools = read_tools(_annotation_path(root, 'tool_annotations', name, 'tool'))
        return VideoTask(name, str(video), phases, tools, size)

    def _generate_examples(self, tasks: Sequence[VideoTask], split: str):
        return self._per_video_examples(tasks, process_video, split=split, task_name=_task_name)
