"""Write a GenSurgery manual dir of generated videos, named as real downloads would be.

Used by the tests (frames that encode their own index), the committed `dummy_data/` and the
pre-training demo (procedural surgery-like frames). The caller picks the frame generator: any
`frames(num_frames, height, width, seed) -> (T, H, W, 3) uint8`, e.g. `index_video` below or
`gsvit_jax.data.synthetic.surgical_video`.

    python -m tfds_builders.gensurgery.fake_data   # regenerates dummy_data/
"""
from __future__ import annotations

import dataclasses
import pathlib
import shutil
import zlib
from typing import Callable, Iterable, Sequence

import numpy as np

from tfds_builders import testing
from tfds_builders.gensurgery import url_lists

FrameFn = Callable[[int, int, int, int], np.ndarray]

DUMMY_DATA = pathlib.Path(__file__).parent / 'dummy_data'
DUMMY_LISTS = 'videos_to_download'  # where the dummy data keeps its lists (the mocked download)


@dataclasses.dataclass(frozen=True)
class FakeVideo:
    """One listed video: its categories and, unless missing, the file a download would leave.

    `filename` is relative to the manual dir (default `<id>.mp4`); `kind` is 'ok', 'corrupt'
    (random bytes), 'empty' (no frames) or 'missing' (listed, never downloaded: link rot).
    """

    video_id: str
    categories: tuple[str, ...]
    seconds: float = 3.0
    fps: float = 25.0
    filename: str | None = None
    kind: str = 'ok'

    @property
    def path(self) -> str:
        return self.filename or f'{self.video_id}.mp4'


def index_video(num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """Frames numbered 0, 1, ... (`testing.index_frames`); `seed` is not needed."""
    del seed
    return testing.index_frames(num_frames, height, width)


def write_manual_dir(manual_dir: str | pathlib.Path, videos: Sequence[FakeVideo], *,
                     frames: FrameFn = index_video, height: int = 64, width: int = 96,
                     lists_dir: str = 'url_lists', extra_lines: Iterable[str] = ()
                     ) -> pathlib.Path:
    """Write the videos and the 27 `<category>.txt` lists naming them under `manual_dir`.

    Lists go to `manual_dir/<lists_dir>/` (the builder uses `url_lists/` there instead of the
    pinned release). Lines alternate between the two released URL forms and end in CRLF, like
    the release; `extra_lines` are appended to `unsorted.txt` (e.g. a malformed URL).
    """
    manual_dir = pathlib.Path(manual_dir)
    for video in videos:
        path = manual_dir / video.path
        if video.kind == 'ok':
            seed = zlib.crc32(video.video_id.encode())
            testing.write_video(path, frames(round(video.seconds * video.fps), height, width, seed),
                                fps=video.fps)
        elif video.kind == 'corrupt':
            testing.write_corrupt_video(path)
        elif video.kind == 'empty':
            testing.write_empty_video(path)
        elif video.kind != 'missing':
            raise ValueError(f'unknown kind {video.kind!r} for {video.video_id}')
    write_lists(manual_dir / lists_dir, videos, extra_lines)
    return manual_dir


def write_lists(directory: pathlib.Path, videos: Sequence[FakeVideo],
                extra_lines: Iterable[str] = ()) -> None:
    """The 27 list files (empty where no video is listed), CRLF, both URL forms."""
    directory.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {c: [] for c in url_lists.CATEGORIES}
    for i, video in enumerate(videos):
        for category in video.categories:
            lines[category].append(f'https://youtu.be/{video.video_id}' if i % 2 else
                                   f'https://www.youtube.com/watch?v={video.video_id}')
    lines[url_lists.UNSORTED].extend(extra_lines)
    for category, urls in lines.items():
        (directory / f'{category}.txt').write_bytes(''.join(f'{u}\r\n' for u in urls).encode())


# The committed dummy data: one video per naming the builder accepts, a corrupt download and a
# link-rotted ID. IDs were picked so that, at the default validation_percent=5, `dummyVideoK`
# lands in `validation` (sha256 bucket 0) and the others in `train`.
DUMMY_VIDEOS = (
    FakeVideo('dummyVideoA', ('colectomy', 'unsorted'), seconds=3.0, fps=25),
    FakeVideo('dummyVideoK', ('cholestectomy', 'robotic_chole'), seconds=2.0, fps=30,
              filename='watch#v=dummyVideoK.Laparoscopic cholecystectomy.mp4'),
    FakeVideo('dummyVideoC', ('hernia',), seconds=4.0, fps=25,
              filename='hernia/dummyVideoC.Inguinal hernia repair.mkv'),
    FakeVideo('dummyVideoD', ('appendectomy',), kind='corrupt'),
    FakeVideo('dummyVideoE', ('hernia', 'IBS'), kind='missing'),
)
# Examples the default config (1 fps) makes from them.
DUMMY_SPLITS = {'train': 3 + 4, 'validation': 2}


def write_dummy_data(directory: str | pathlib.Path = DUMMY_DATA) -> pathlib.Path:
    """(Re)write `dummy_data/`: tiny index-frame videos, lists the mocked download returns."""
    directory = pathlib.Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    return write_manual_dir(directory, DUMMY_VIDEOS, height=48, width=64, lists_dir=DUMMY_LISTS,
                            extra_lines=['https://www.youtube.com/watch?v=truncated'])


if __name__ == '__main__':
    print(write_dummy_data())
