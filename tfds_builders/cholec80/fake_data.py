"""Generated Cholec80-layout manual dirs for tests, the committed `dummy_data/` and demos.

`make_manual_dir` writes `videos/videoNN.mp4` (25 fps, frames drawn by `testing.index_frame` so the
source frame index can be read back from any stored image), `phase_annotations/videoNN-phase.txt`
and `tool_annotations/videoNN-tool.txt` in the exact release format. Per video it can set the phase
timeline, the tool flags, annotation lengths that differ from the video (as in the real release),
and replace the video by a corrupt, empty or truncated file, or leave it out (a partial copy).
With `distinguishable=True` every phase tints its frames a different colour (plus noise) while the
code blocks stay clearly dark or light, so a classifier can learn the phase and `read_index` works.

Regenerate the committed dummy data with `python -m tfds_builders.cholec80.fake_data`.
"""
from __future__ import annotations

import pathlib
from typing import Collection, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from tfds_builders import testing
from tfds_builders.cholec80.annotations import (FPS, PHASES, TOOL_STEP, TOOLS, format_phases,
                                                format_tools, video_name)

DUMMY_DATA_DIR = pathlib.Path(__file__).parent / 'dummy_data'

# Zero-sum RGB offsets (the grey level `read_index` thresholds stays put), one per phase: the six
# corners of a hexagon in the chroma plane and plain grey, at least 73 apart.
PHASE_TINTS = np.array([
    (60, -30, -30), (30, 30, -60), (-30, 60, -30), (-60, 30, 30),
    (-30, -30, 60), (30, -60, 30), (0, 0, 0),
], np.float32)
# Tinted frames redraw the code's dark/light blocks at 70/185 so no tint clips at 0 or 255.
_LOW, _HIGH = 70.0, 185.0

T = TypeVar('T')
PerVideo = T | Mapping[int, T]


def phase_timeline(num_frames: int, phases: Sequence[str] = PHASES) -> list[str]:
    """Per-frame phase names: `phases` in order, each a contiguous, (nearly) equal share."""
    bounds = np.linspace(0, num_frames, len(phases) + 1).round().astype(int)
    return [phases[i] for i in range(len(phases)) for _ in range(bounds[i], bounds[i + 1])]


def random_tools(num_rows: int, seed: int = 0, p: float = 0.3) -> np.ndarray:
    """(num_rows, 7) bool tool flags, each present with probability `p`."""
    return np.random.default_rng(seed).random((num_rows, len(TOOLS))) < p


def _for_video(value: PerVideo[T] | None, number: int, default: T | None) -> T:
    """The value for video `number`: from a per-video mapping, a shared value, or `default`."""
    found = value.get(number, default) if isinstance(value, Mapping) else value
    found = default if found is None else found
    if found is None:
        raise ValueError(f'no value given for video {number}')
    return found


def mislead(phase_of_frame: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Per-frame tint phases where a random `fraction` of the seconds (25-frame blocks) shows
    another phase's tint: single frames mislead there, the surrounding seconds do not."""
    if not fraction:
        return phase_of_frame
    rng = np.random.default_rng([seed, 7])
    seconds = -(-len(phase_of_frame) // FPS)
    wrong = (phase_of_frame[::FPS] + rng.integers(1, len(PHASES), seconds)) % len(PHASES)
    chosen = np.repeat(np.where(rng.random(seconds) < fraction, wrong, -1), FPS)
    chosen = chosen[:len(phase_of_frame)]
    return np.where(chosen >= 0, chosen, phase_of_frame)


def _frames(num_frames: int, phase_of_frame: np.ndarray | None, height: int, width: int,
            noise: float, seed: int) -> Iterator[np.ndarray]:
    """Index-coded frames, tinted by `phase_of_frame` (phase index per frame) when given."""
    rng = np.random.default_rng(seed)
    for i in range(num_frames):
        frame = testing.index_frame(i, height, width)
        if phase_of_frame is not None:
            tint = PHASE_TINTS[phase_of_frame[min(i, len(phase_of_frame) - 1)]]
            jitter = rng.normal(0.0, noise, (height, width, 1)).astype(np.float32)
            grey = np.where(frame > 128, _HIGH, _LOW).astype(np.float32)
            frame = np.clip(grey + tint + jitter, 0, 255).astype(np.uint8)
        yield frame


def make_manual_dir(root: str | pathlib.Path, video_ids: Sequence[int],
                    frames_per_video: PerVideo[int], *,
                    phases: Mapping[int, Sequence[str]] | None = None,
                    tools: Mapping[int, np.ndarray] | None = None,
                    phase_frames: PerVideo[int] | None = None,
                    tool_rows: PerVideo[int] | None = None,
                    corrupt: Collection[int] = (), empty: Collection[int] = (),
                    truncated: Collection[int] = (), missing: Collection[int] = (),
                    distinguishable: bool = False, noise: float = 8.0, misleading: float = 0.0,
                    height: int = 64, width: int = 96, crlf: bool = False,
                    seed: int = 0) -> pathlib.Path:
    """Write a Cholec80 manual dir under `root` and return `root`.

    Args:
      video_ids: video numbers (1..80) to create.
      frames_per_video: frames in each mp4 (an int for all, or {number: frames}).
      phases: {number: per-frame phase names}; default `phase_timeline` over `phase_frames`.
      tools: {number: (rows, 7) bool}; default `random_tools` over `tool_rows`.
      phase_frames: rows of the phase file when `phases` is not given; default: the video length.
      tool_rows: rows of the tool file when `tools` is not given; default: one per 25 phase frames.
      corrupt / empty / truncated: numbers whose mp4 is random bytes / has zero frames / is cut in
        half; missing: numbers written without an mp4 (annotations only).
      distinguishable: tint each frame by its phase (plus per-pixel noise of std `noise`).
      misleading: with `distinguishable`, the fraction of seconds tinted as another phase (the
        labels stay true): what a single-frame model gets wrong and temporal context can fix.
      crlf: write the annotation files with CRLF line ends.
    """
    root = pathlib.Path(root)
    for folder in ('videos', 'phase_annotations', 'tool_annotations'):
        (root / folder).mkdir(parents=True, exist_ok=True)
    newline = '\r\n' if crlf else '\n'
    for number in video_ids:
        name = video_name(number)
        num_frames = _for_video(frames_per_video, number, None)
        labels = (phases or {}).get(number)
        if labels is None:
            labels = phase_timeline(_for_video(phase_frames, number, num_frames))
        flags = (tools or {}).get(number)
        if flags is None:
            rows = _for_video(tool_rows, number, -(-len(labels) // TOOL_STEP))
            flags = random_tools(rows, seed=seed * 1000 + number)
        (root / 'phase_annotations' / f'{name}-phase.txt').write_bytes(
            format_phases(labels, newline).encode())
        (root / 'tool_annotations' / f'{name}-tool.txt').write_bytes(
            format_tools(flags, newline).encode())

        path = root / 'videos' / f'{name}.mp4'
        phase_of_frame = None
        if distinguishable:
            phase_of_frame = mislead(np.array([PHASES.index(p) for p in labels]), misleading,
                                     seed * 1000 + number)
        frames = _frames(num_frames, phase_of_frame, height, width, noise, seed * 1000 + number)
        if number in missing:
            continue
        if number in corrupt:
            testing.write_corrupt_video(path, seed=number)
        elif number in empty:
            testing.write_empty_video(path)
        elif number in truncated:
            testing.write_truncated_video(path, np.stack(list(frames)), fps=FPS)
        else:
            testing.write_video(path, frames, fps=FPS)
    return root


# The committed dummy data: one video in each block of the three split conventions
# (train 1-32, validation 33-40 or 41-48, test 49-80), so every config gets examples in every
# split; video 41's phase file is 2 frames shorter than the video (a real-release quirk).
DUMMY_VIDEOS = {1: 51, 33: 26, 41: 76, 49: 51}  # number -> frames (3, 2, 4 -> 3 clipped, 3)
DUMMY_PHASE_FRAMES = {41: 74}


def write_dummy_data(root: str | pathlib.Path = DUMMY_DATA_DIR) -> pathlib.Path:
    """(Re)generate the committed `dummy_data/` manual dir."""
    return make_manual_dir(root, sorted(DUMMY_VIDEOS), DUMMY_VIDEOS,
                           phase_frames=DUMMY_PHASE_FRAMES, distinguishable=True, noise=0.0,
                           height=48, width=64)


if __name__ == '__main__':
    print(write_dummy_data())
