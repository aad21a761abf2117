"""The picture of a search: the query frame and its matches in a grid, each captioned (video,
time, similarity). Match frames are read back from the index's sources; a source that can no
longer be read becomes a grey tile saying why, never a crash.

Plain PIL + numpy, RGB uint8 arrays, like `gsvit_jax.phase.pictures`.
"""
from __future__ import annotations

import math
import pathlib
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gsvit_jax.embed.inputs import TFDS_PREFIX
from gsvit_jax.embed.nearest import Index, Match
from gsvit_jax.embed.query import Query, format_time, frame_at, read_image
from gsvit_jax.errors import UserError

TILE = 224  # frames are fitted into TILE x TILE
MARGIN = 8
COLUMNS = 6
CAPTION_LINES = 3
_WHITE, _BLACK, _GREY, _BLUE = (255, 255, 255), (0, 0, 0), (160, 160, 160), (31, 119, 180)
_FONT = ImageFont.load_default()


def _line_height() -> int:
    return _FONT.getbbox('Ag')[3] + 4


def _width(text: str) -> int:
    return math.ceil(_FONT.getlength(text))


def cell_size() -> tuple[int, int]:
    """(width, height) of one captioned tile."""
    return TILE, TILE + CAPTION_LINES * _line_height()


def search_picture(query: Query, index: Index, matches: Sequence[Match],
                   columns: int = COLUMNS) -> np.ndarray:
    """RGB uint8 grid: the query, then each match, `columns` tiles a row, MARGIN apart."""
    tiles = [_tile(query.frame, query.caption(), _BLUE)]
    for rank, match in enumerate(matches, 1):
        caption = [f'#{rank}  similarity {match.similarity:.4f}', match.label,
                   format_time(match.time_s)]
        try:
            frame = match_frame(index, match)
        except Exception as e:  # noqa: BLE001 - any unreadable source is shown, not raised
            tiles.append(_tile(None, caption, _BLACK, f'source not readable: {e}'))
        else:
            tiles.append(_tile(frame, caption, _BLACK))
    cell_w, cell_h = cell_size()
    cols = min(columns, len(tiles))
    rows = -(-len(tiles) // cols)
    image = Image.new('RGB', (MARGIN + cols * (cell_w + MARGIN), MARGIN + rows * (cell_h + MARGIN)),
                      _WHITE)
    for i, tile in enumerate(tiles):
        row, col = divmod(i, cols)
        image.paste(tile, (MARGIN + col * (cell_w + MARGIN), MARGIN + row * (cell_h + MARGIN)))
    return np.asarray(image)


def match_frame(index: Index, match: Match) -> np.ndarray:
    """The matched frame, RGB uint8: the image file of an image folder, else the source video
    decoded at the match's time."""
    source = next(v.source for v in index.videos if v.rel == match.video)
    if source.startswith(TFDS_PREFIX):
        raise UserError(f'{source} is a TFDS example; its frames are not read back')
    if match.name is not None:
        return read_image(pathlib.Path(source) / match.name)
    return frame_at(source, match.time_s)[0]


def _tile(frame: np.ndarray | None, caption: Sequence[str], ink: tuple[int, int, int],
          problem: str = '') -> Image.Image:
    """The frame fitted (aspect kept) on black, or a grey square stating `problem`, above the
    caption lines."""
    width, height = cell_size()
    tile = Image.new('RGB', (width, height), _WHITE)
    draw = ImageDraw.Draw(tile)
    if frame is None:
        draw.rectangle((0, 0, TILE - 1, TILE - 1), fill=_GREY)
        for i, line in enumerate(_wrap(problem, TILE - 8)[:TILE // _line_height()]):
            draw.text((4, 4 + i * _line_height()), line, fill=_BLACK, font=_FONT)
    else:
        draw.rectangle((0, 0, TILE - 1, TILE - 1), fill=_BLACK)
        picture = Image.fromarray(frame)
        scale = min(TILE / picture.width, TILE / picture.height)
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        tile.paste(picture.resize(size, Image.BILINEAR),
                   ((TILE - size[0]) // 2, (TILE - size[1]) // 2))
    for i, line in enumerate(caption[:CAPTION_LINES]):
        draw.text((2, TILE + 2 + i * _line_height()), _fit(line, width - 4), fill=ink, font=_FONT)
    return tile


def _fit(text: str, width: int) -> str:
    """`text`, or its end after '...' where it is wider than `width` (names end informatively)."""
    if _width(text) <= width:
        return text
    while text and _width('...' + text) > width:
        text = text[1:]
    return '...' + text


def _wrap(text: str, width: int) -> list[str]:
    """`text` broken into lines no wider than `width`, at any character (paths have no spaces)."""
    lines = ['']
    for char in ' '.join(text.split()):
        if lines[-1] and _width(lines[-1] + char) > width:
            lines.append('')
        lines[-1] += char
    return lines
