"""Search queries: `frame.png` or `video.mp4@t=93s` (also `@t=93.5`, `@t=1:33`, `@t=1:01:33.5`)
turned into the RGB frame to look for, and times written the way users read them (h:mm:ss.s).

Every failure a user can fix (no such file, bad time, time past the end, unreadable image or
video) is a `UserError` naming the file or the text.
"""
from __future__ import annotations

import dataclasses
import pathlib
import re

import numpy as np
from PIL import Image

from gsvit_jax.errors import UserError, describe

TIME_MARK = '@t='
_SECONDS = re.compile(r'(\d+(?:\.\d*)?)s?')
_CLOCK = re.compile(r'(?:(\d+):)?(\d+):(\d{1,2}(?:\.\d*)?)')


@dataclasses.dataclass(frozen=True)
class Query:
    """The frame to search for: from `path`, at `time_s` of the video (None for an image)."""

    spec: str
    path: pathlib.Path
    frame: np.ndarray  # RGB uint8 (H, W, 3)
    time_s: float | None  # presentation time of the decoded frame

    def caption(self) -> list[str]:
        """Lines naming the query under its picture tile."""
        where = [] if self.time_s is None else [format_time(self.time_s)]
        return ['query', self.path.name, *where]


def parse_time(text: str) -> float:
    """Seconds from `93`, `93s`, `93.5`, `1:33` (m:ss) or `1:01:33.5` (h:mm:ss)."""
    seconds = _SECONDS.fullmatch(text)
    if seconds:
        return float(seconds.group(1))
    clock = _CLOCK.fullmatch(text)
    if clock:
        hours, minutes, secs = clock.groups()
        if (hours is not None and int(minutes) >= 60) or float(secs) >= 60:
            raise UserError(f'bad time {text!r}: minutes and seconds after a colon are below 60')
        return int(hours or 0) * 3600 + int(minutes) * 60 + float(secs)
    raise UserError(f'bad time {text!r}; write seconds (93, 93.5, 93s) or a clock time (1:33, '
                    '1:01:33.5)')


def format_time(seconds: float) -> str:
    """h:mm:ss.s, e.g. 93.04 -> 0:01:33.0."""
    tenths = round(seconds * 10)
    hours, tenths = divmod(tenths, 36000)
    minutes, tenths = divmod(tenths, 600)
    return f'{hours}:{minutes:02d}:{tenths / 10:04.1f}'


def split_spec(spec: str) -> tuple[pathlib.Path, float | None]:
    """`video.mp4@t=93s` -> (path, 93.0); a spec without `@t=` is an image: (path, None)."""
    name, mark, time = spec.rpartition(TIME_MARK)
    if not mark:
        return pathlib.Path(spec), None
    if not name:
        raise UserError(f'query {spec!r} names no file before {TIME_MARK}')
    return pathlib.Path(name), parse_time(time)


def read_query(spec: str) -> Query:
    """The query frame of `spec`: the image, or the video's first frame at or after the time."""
    path, time = split_spec(spec)
    if not path.is_file():
        raise UserError(f'no query file {path}')
    if time is None:
        return Query(spec, path, read_image(path, hint=True), None)
    frame, frame_time = frame_at(path, time)
    return Query(spec, path, frame, frame_time)


def read_image(path: str | pathlib.Path, hint: bool = False) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3); `hint`: the error also says how to query a video."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert('RGB'))
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds for files it cannot read
        how = f'; a video query needs a time: {path}{TIME_MARK}SECONDS' if hint else ''
        raise UserError(f'cannot read {path} as an image ({describe(e)}){how}') from e


def frame_at(path: str | pathlib.Path, time_s: float) -> tuple[np.ndarray, float]:
    """(RGB uint8 frame, its time): the video's first frame at or after `time_s` (half a frame
    early counts, as in the builders' sampling). Seeks to the keyframe before, then decodes on."""
    import av
    try:
        container = av.open(str(path))
    except Exception as e:  # noqa: BLE001 - any open failure means an unusable file
        raise UserError(f'cannot open video {path} ({describe(e)})') from e
    with container:
        if not container.streams.video:
            raise UserError(f'{path} has no video stream')
        stream = container.streams.video[0]
        slack = 0.5 / float(stream.average_rate or stream.guessed_rate or 25)
        try:
            if time_s > 0:
                container.seek(int(time_s / stream.time_base), stream=stream)
            for frame in container.decode(stream):
                if frame.time is not None and frame.time + slack >= time_s:
                    return frame.to_ndarray(format='rgb24'), float(frame.time)
        except av.FFmpegError as e:
            raise UserError(f'cannot decode {path} at t={time_s:g}s ({e})') from e
        length = '' if container.duration is None else f' ({container.duration / av.time_base:g} s)'
    raise UserError(f't={time_s:g}s is beyond the end of {path}{length}')
