"""Pictures of Cholec80 phase predictions: per-video phase timelines and a confusion matrix.

Plain PIL + numpy (no matplotlib), RGB uint8 arrays; `save_png` writes them atomically.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gsvit_jax.phase.metrics import check_videos, strict_video_scores
from gsvit_jax.train.pictures import save_png
from tfds_builders.cholec80.annotations import PHASES

__all__ = ['PHASE_COLORS', 'confusion_matrix_image', 'phase_timelines', 'prediction_timeline',
           'save_png']

PHASE_COLORS = (
    (31, 119, 180),  # Preparation: blue
    (255, 127, 14),  # CalotTriangleDissection: orange
    (44, 160, 44),  # ClippingCutting: green
    (214, 39, 40),  # GallbladderDissection: red
    (148, 103, 189),  # GallbladderPackaging: purple
    (140, 86, 75),  # CleaningCoagulation: brown
    (227, 119, 194),  # GallbladderRetraction: pink
)
_WHITE, _BLACK, _GREY = (255, 255, 255), (0, 0, 0), (160, 160, 160)
_HEAT_HIGH = (8, 48, 107)  # colour of a 100 % cell; 0 % is white
_MARGIN = 10
_RIBBON_H, _RIBBON_GAP, _BLOCK_GAP = 14, 2, 8
_RIBBON_LABEL_W = 40  # room for 'GT' / 'pred' left of the ribbons
_SWATCH = 12
_CELL_W, _CELL_H = 64, 36


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _line_height(font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
    return font.getbbox('Ag')[3] + 4


def _text_width(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, text: str) -> int:
    return math.ceil(font.getlength(text))


def _check_names(names: Sequence[str]) -> None:
    if len(names) != len(PHASE_COLORS):
        raise ValueError(f'expected {len(PHASE_COLORS)} phase names, got {len(names)}')


def _pixels(seconds: int, seconds_per_pixel: float) -> int:
    """Pixels spanned by `seconds`, robust to float error (40 s at 0.2 s/px is 200 px)."""
    return max(1, math.ceil(round(seconds / seconds_per_pixel, 6)))


def _ribbon(labels: np.ndarray, seconds_per_pixel: float, max_width: int) -> np.ndarray:
    """(RIBBON_H, w, 3) colours: pixel x shows the frame at second floor(x * seconds_per_pixel)."""
    width = min(max_width, _pixels(len(labels), seconds_per_pixel))
    frames = np.minimum((np.arange(width) * seconds_per_pixel).astype(np.int64), len(labels) - 1)
    colours = np.asarray(PHASE_COLORS, np.uint8)[labels[frames]]
    return np.broadcast_to(colours, (_RIBBON_H, width, 3))


def _legend_rows(font, names: Sequence[str], width: int) -> list[list[tuple[int, int]]]:
    """Legend entries (phase, x offset) flowed into rows no wider than `width` where possible."""
    rows: list[list[tuple[int, int]]] = [[]]
    x = 0
    for phase, name in enumerate(names):
        item = _SWATCH + 4 + _text_width(font, name) + 16
        if rows[-1] and x + item > width:
            rows.append([])
            x = 0
        rows[-1].append((phase, x))
        x += item
    return rows


def _draw_legend(draw: ImageDraw.ImageDraw, font, legend: list[list[tuple[int, int]]],
                 names: Sequence[str], y: int) -> None:
    """Colour swatches with phase names, rows from `_legend_rows`, starting at height y."""
    for row in legend:
        for phase, x in row:
            x += _MARGIN
            draw.rectangle((x, y + 1, x + _SWATCH - 1, y + _SWATCH), fill=PHASE_COLORS[phase])
            draw.text((x + _SWATCH + 4, y), names[phase], fill=_BLACK, font=font)
        y += _line_height(font)


def phase_timelines(gt: Mapping[str, np.ndarray], pred: Mapping[str, np.ndarray],
                    names: Sequence[str] = PHASES, seconds_per_pixel: float | None = None,
                    width: int = 1000) -> np.ndarray:
    """Per video (sorted by id) a GT ribbon above a pred ribbon, one colour per phase, on a
    common time scale (by default the longest video spans `width` px), plus a colour legend.

    Returns an RGB uint8 image of width `2 * margin + 40 + plot width`.
    """
    _check_names(names)
    videos = check_videos(gt, pred)
    longest = max(len(g) for g, _ in videos.values())
    if seconds_per_pixel is None:
        seconds_per_pixel, plot_w = longest / width, width
    else:
        plot_w = _pixels(longest, seconds_per_pixel)
    font = _font()
    line = _line_height(font)
    block_h = line + 2 * _RIBBON_H + _RIBBON_GAP + _BLOCK_GAP
    legend = _legend_rows(font, names, _RIBBON_LABEL_W + plot_w)
    image = Image.new('RGB', (2 * _MARGIN + _RIBBON_LABEL_W + plot_w,
                              2 * _MARGIN + line + len(videos) * block_h + len(legend) * line),
                      _WHITE)
    draw = ImageDraw.Draw(image)
    draw.text((_MARGIN, _MARGIN), f'Phase timelines, GT above pred, 1 px = '
              f'{seconds_per_pixel:.3g} s', fill=_BLACK, font=font)
    y = _MARGIN + line
    x_plot = _MARGIN + _RIBBON_LABEL_W
    for vid, (g, p) in videos.items():
        accuracy = strict_video_scores(g, p).accuracy
        draw.text((_MARGIN, y), f'{vid}: strict accuracy {accuracy:.1f}%', fill=_BLACK, font=font)
        y += line
        for label, labels in (('GT', g), ('pred', p)):
            draw.text((_MARGIN, y + 1), label, fill=_BLACK, font=font)
            image.paste(Image.fromarray(np.ascontiguousarray(
                _ribbon(labels, seconds_per_pixel, plot_w))), (x_plot, y))
            y += _RIBBON_H + _RIBBON_GAP
        y += _BLOCK_GAP - _RIBBON_GAP
    _draw_legend(draw, font, legend, names, y)
    return np.asarray(image)


def prediction_timeline(pred: np.ndarray, title: str, names: Sequence[str] = PHASES,
                        width: int = 1000) -> np.ndarray:
    """One predicted-phase ribbon (no ground truth) for `python -m gsvit_jax.phase predict`."""
    _check_names(names)
    pred = np.asarray(pred, np.int64)
    seconds_per_pixel = max(len(pred), 1) / width
    font = _font()
    line = _line_height(font)
    legend = _legend_rows(font, names, _RIBBON_LABEL_W + width)
    image = Image.new('RGB', (2 * _MARGIN + _RIBBON_LABEL_W + width,
                              2 * _MARGIN + line + _RIBBON_H + _BLOCK_GAP + len(legend) * line),
                      _WHITE)
    draw = ImageDraw.Draw(image)
    draw.text((_MARGIN, _MARGIN), f'{title}: {len(pred)} s, 1 px = {seconds_per_pixel:.3g} s',
              fill=_BLACK, font=font)
    y = _MARGIN + line
    draw.text((_MARGIN, y + 1), 'pred', fill=_BLACK, font=font)
    image.paste(Image.fromarray(np.ascontiguousarray(_ribbon(pred, seconds_per_pixel, width))),
                (_MARGIN + _RIBBON_LABEL_W, y))
    y += _RIBBON_H + _BLOCK_GAP
    _draw_legend(draw, font, legend, names, y)
    return np.asarray(image)


def _heat(fraction: float) -> tuple[int, ...]:
    return tuple(round(lo + (hi - lo) * fraction) for lo, hi in zip(_WHITE, _HEAT_HIGH))


def _rotated_text(font, text: str, height: int) -> Image.Image:
    """`text` reading bottom-to-top, as a white-background RGB image."""
    strip = Image.new('RGB', (_text_width(font, text), height), _WHITE)
    ImageDraw.Draw(strip).text((0, 0), text, fill=_BLACK, font=font)
    return strip.rotate(90, expand=True)


def _fractions(cm: np.ndarray, normalize: bool) -> np.ndarray:
    """Cell colour intensities in [0, 1]: row shares, or counts over the largest count."""
    totals = cm.sum(1, keepdims=True) if normalize else np.full_like(cm, max(cm.max(), 1))
    return cm / np.maximum(totals, 1)


def _draw_cells(draw: ImageDraw.ImageDraw, font, cm: np.ndarray, normalize: bool,
                origin: tuple[int, int]) -> None:
    """Colour every cell and write its row percentage and count in it."""
    line = _line_height(font)
    shares = cm / np.maximum(cm.sum(1, keepdims=True), 1) * 100.0
    fractions = _fractions(cm, normalize)
    for (i, j), count in np.ndenumerate(cm):
        x, y = origin[0] + j * _CELL_W, origin[1] + i * _CELL_H
        draw.rectangle((x, y, x + _CELL_W - 1, y + _CELL_H - 1), fill=_heat(fractions[i, j]))
        ink = _WHITE if fractions[i, j] > 0.5 else _BLACK
        for k, text in enumerate((f'{shares[i, j]:.1f}%', str(count))):
            tx = x + (_CELL_W - _text_width(font, text)) // 2
            draw.text((tx, y + _CELL_H // 2 - line + 2 + k * (line - 2)), text, fill=ink,
                      font=font)


def confusion_matrix_image(cm: np.ndarray, names: Sequence[str] = PHASES,
                           normalize: bool = True) -> np.ndarray:
    """Heat map of a (K, K) count matrix (rows = true phase, columns = predicted phase).

    Cell colours are row-normalised (`normalize=False`: relative to the largest count); every
    cell shows its row percentage and its count. Column names are written vertically.
    """
    _check_names(names)
    cm = np.asarray(cm)
    k = len(names)
    if cm.shape != (k, k) or not np.issubdtype(cm.dtype, np.integer) or (cm < 0).any():
        raise ValueError(f'expected a ({k}, {k}) matrix of non-negative integer counts, got '
                         f'shape {cm.shape}, dtype {cm.dtype}')
    font = _font()
    line = _line_height(font)
    label_w = max(_text_width(font, name) for name in names) + 8
    origin = (_MARGIN + line + label_w, _MARGIN + 2 * line + label_w)
    image = Image.new('RGB', (origin[0] + k * _CELL_W + _MARGIN,
                              origin[1] + k * _CELL_H + _MARGIN), _WHITE)
    draw = ImageDraw.Draw(image)
    colours = 'row-normalised' if normalize else 'relative to the largest count'
    draw.text((_MARGIN, _MARGIN), f'Confusion matrix (frames; colours {colours})',
              fill=_BLACK, font=font)
    draw.text((origin[0], _MARGIN + line), 'predicted phase', fill=_BLACK, font=font)
    true_title = _rotated_text(font, 'true phase', line)
    image.paste(true_title, (_MARGIN, origin[1] + (k * _CELL_H - true_title.height) // 2))
    for index, name in enumerate(names):
        draw.text((origin[0] - label_w, origin[1] + index * _CELL_H + (_CELL_H - line) // 2),
                  name, fill=_BLACK, font=font)
        column = _rotated_text(font, name, line)
        image.paste(column, (origin[0] + index * _CELL_W + (_CELL_W - column.width) // 2,
                             origin[1] - 4 - column.height))
    _draw_cells(draw, font, cm, normalize, origin)
    draw.rectangle((origin[0] - 1, origin[1] - 1, origin[0] + k * _CELL_W,
                    origin[1] + k * _CELL_H), outline=_GREY)
    return np.asarray(image)
