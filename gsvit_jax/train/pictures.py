"""Pictures a person would rather look at: prediction grids for next-frame prediction."""
from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gsvit_jax.atomic import write_atomic

COLUMNS = ('input', 'predicted', 'target', 'error x4')  # the header row's labels


def _rgb(images_bgr01: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(images_bgr01, np.float32)[..., ::-1] * 255.0, 0, 255).astype(np.uint8)


def _header(width: int) -> np.ndarray:
    """A white row with the COLUMNS' names centred over columns `width` pixels wide."""
    font = ImageFont.load_default(size=min(max(width // 12, 9), 18))
    height = font.getbbox('Ag')[3] + 6
    image = Image.new('RGB', (width * len(COLUMNS), height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for i, title in enumerate(COLUMNS):
        draw.text((i * width + (width - font.getlength(title)) / 2, 3), title, fill=(0, 0, 0),
                  font=font)
    return np.asarray(image)


def prediction_grid(inputs: np.ndarray, predictions: np.ndarray, targets: np.ndarray,
                    rows: int = 4) -> np.ndarray:
    """Under a header row naming the columns, one row per example: input | predicted | target |
    |error| (x4), as RGB uint8.

    All arrays are BGR in [0, 1], (B, H, W, 3), as the model sees them.
    """
    rows = min(rows, len(inputs))
    error = np.clip(np.abs(np.asarray(predictions, np.float32) - targets) * 4.0, 0, 1)
    panels = [_rgb(a[:rows]) for a in (inputs, predictions, targets, error)]
    body = [np.concatenate(list(row), axis=1) for row in zip(*panels)]
    return np.concatenate([_header(inputs.shape[2])] + body, axis=0)


def save_png(image: np.ndarray, path: str | pathlib.Path) -> pathlib.Path:
    """Atomically write an RGB uint8 image as PNG."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda f: Image.fromarray(image).save(f, format='PNG'))
