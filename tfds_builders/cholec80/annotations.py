"""Cholec80 annotation files: the phase and tool label vocabularies, parsers and writers.

Phase file `videoNN-phase.txt`: header `Frame\tPhase`, then `<frame>\t<PhaseName>` for every 25-fps
frame from 0 on. Tool file `videoNN-tool.txt`: header `Frame\tGrasper\t...\tSpecimenBag`, then one
row of 0/1 flags every 25 frames (0, 25, 50, ...). Parsing is strict: the labels are the ground
truth of every later experiment, so any malformed line raises `AnnotationError` naming the file,
the 1-based line number, the offending text and what was expected. CRLF line ends and trailing
blank lines are tolerated.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

import numpy as np

FPS = 25  # frame rate of the videos and of the phase annotation
TOOL_STEP = 25  # frames between two tool annotation rows (1 fps)

# Canonical phase order (TeCNO / TMRNet / M2CAI Matlab evaluation); the Matlab relaxed metric
# hard-codes these indices, so this order must not change.
PHASES = (
    'Preparation',
    'CalotTriangleDissection',
    'ClippingCutting',
    'GallbladderDissection',
    'GallbladderPackaging',
    'CleaningCoagulation',
    'GallbladderRetraction',
)
TOOLS = ('Grasper', 'Bipolar', 'Hook', 'Scissors', 'Clipper', 'Irrigator', 'SpecimenBag')

PHASE_HEADER = ('Frame', 'Phase')
TOOL_HEADER = ('Frame', *TOOLS)


def video_name(number: int) -> str:
    """Video number -> release file stem: 1 -> 'video01'."""
    return f'video{number:02d}'


class AnnotationError(ValueError):
    """A malformed line in an annotation file; says where, what was found and what was expected."""

    def __init__(self, source: str, line_number: int, text: str, expected: str):
        self.source, self.line_number = source, line_number
        self.text, self.expected = text, expected
        super().__init__(f'{source}, line {line_number}: got {text!r}, expected {expected}')

    def __reduce__(self):  # keep the fields when the error crosses a process boundary
        return type(self), (self.source, self.line_number, self.text, self.expected)


@dataclasses.dataclass(frozen=True)
class ToolAnnotations:
    """Tool presence every `TOOL_STEP` frames: `frames` (N,) int64 and `present` (N, 7) bool."""

    frames: np.ndarray
    present: np.ndarray


def _lines(text: str) -> list[str]:
    """Split on LF or CRLF and drop trailing blank lines (a final newline is not a row)."""
    lines = text.replace('\r\n', '\n').split('\n')
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _fields(line: str) -> list[str]:
    return [field.strip() for field in line.split('\t')]


def _check_header(lines: list[str], header: Sequence[str], source: str) -> None:
    if not lines or _fields(lines[0]) != list(header):
        raise AnnotationError(source, 1, lines[0] if lines else '', 'the header '
                              + repr('\t'.join(header)))
    if len(lines) == 1:
        raise AnnotationError(source, 2, '', 'at least one row after the header')


def _frame(field: str, expected_frame: int, line: str, source: str, line_number: int) -> None:
    if not field.isdigit() or int(field) != expected_frame:
        raise AnnotationError(source, line_number, line, f'frame index {expected_frame} in the '
                              'first column (rows must be consecutive from 0)')


def parse_phases(text: str, source: str = '<phase annotation>') -> np.ndarray:
    """Phase file text -> (num_frames,) uint8 indices into `PHASES`, one per 25-fps frame."""
    lines = _lines(text)
    _check_header(lines, PHASE_HEADER, source)
    index = {name: i for i, name in enumerate(PHASES)}
    phases = np.empty(len(lines) - 1, np.uint8)
    for row, line in enumerate(lines[1:]):
        line_number = row + 2
        fields = _fields(line)
        if len(fields) != 2:
            raise AnnotationError(source, line_number, line,
                                  f'2 tab-separated columns <frame>\\t<phase>, not {len(fields)}')
        _frame(fields[0], row, line, source, line_number)
        if fields[1] not in index:
            raise AnnotationError(source, line_number, line,
                                  f'a phase name, one of {", ".join(PHASES)}')
        phases[row] = index[fields[1]]
    return phases


def parse_tools(text: str, source: str = '<tool annotation>') -> ToolAnnotations:
    """Tool file text -> rows at frames 0, 25, 50, ... with 7 presence flags in `TOOLS` order."""
    lines = _lines(text)
    _check_header(lines, TOOL_HEADER, source)
    present = np.zeros((len(lines) - 1, len(TOOLS)), np.bool_)
    for row, line in enumerate(lines[1:]):
        line_number = row + 2
        fields = _fields(line)
        if len(fields) != len(TOOL_HEADER):
            raise AnnotationError(source, line_number, line, f'{len(TOOL_HEADER)} tab-separated '
                                  f'columns (frame + {len(TOOLS)} tools), not {len(fields)}')
        _frame(fields[0], row * TOOL_STEP, line, source, line_number)
        for column, value in enumerate(fields[1:]):
            if value not in ('0', '1'):
                raise AnnotationError(source, line_number, line,
                                      f'0 or 1 for {TOOLS[column]}, not {value!r}')
            present[row, column] = value == '1'
    frames = np.arange(len(present), dtype=np.int64) * TOOL_STEP
    return ToolAnnotations(frames=frames, present=present)


def read_phases(path: str | pathlib.Path) -> np.ndarray:
    """`parse_phases` on a file (UTF-8, a byte-order mark is ignored); errors name the file."""
    path = pathlib.Path(path)
    return parse_phases(path.read_text(encoding='utf-8-sig'), source=str(path))


def read_tools(path: str | pathlib.Path) -> ToolAnnotations:
    """`parse_tools` on a file (UTF-8, a byte-order mark is ignored); errors name the file."""
    path = pathlib.Path(path)
    return parse_tools(path.read_text(encoding='utf-8-sig'), source=str(path))


def format_phases(phases: Sequence[int | str], newline: str = '\n') -> str:
    """Phase file text in the release format, from per-frame phase names or indices."""
    names = [PHASES[p] if not isinstance(p, str) else p for p in phases]
    rows = ['\t'.join(PHASE_HEADER)] + [f'{i}\t{name}' for i, name in enumerate(names)]
    return newline.join(rows) + newline


def format_tools(present: np.ndarray, newline: str = '\n') -> str:
    """Tool file text in the release format, from (rows, 7) presence flags (row k = frame 25k)."""
    rows = ['\t'.join(TOOL_HEADER)] + [
        '\t'.join([str(k * TOOL_STEP), *(str(int(v)) for v in flags)])
        for k, flags in enumerate(np.asarray(present, bool))]
    return newline.join(rows) + newline
