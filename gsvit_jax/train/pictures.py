"""Pictures a person would rather look at: prediction grids for next-frame prediction."""
from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image

from gsvit_jax.atomic import write_atomic


def _rgb(images_bgr01: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(images_bgr01, np.float32)[..., ::-1] * 255.0, 0, 255).astype(np.uint8)


def prediction_grid(inputs: np.ndarray, predictions: np.ndarray, targets: np.ndarray,
                    rows: int = 4) -> np.ndarray:
    """One row per example: input | predicted | target | |error| (x4), as RGB uint8.

    All arrays are BGR in [0, 1], (B, H, W, 3), as the model sees them.
    """
    rows = min(rows, len(inputs))
    error = np.clip(np.abs(np.asarray(predictions, np.float32) - targets) * 4.0, 0, 1)
    panels = [_rgb(a[:rows]) for a in (inputs, predictions, targets, error)]
    return np.concatenate([np.concatenate(list(row), axis=1) for row in zip(*panels)], axis=0)


def save_png(image: np.ndarray, path: str | pathlib.Path) -> pathlib.Path:
    """Atomically write an RGB uint8 image as PNG."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda f: Image.fromarray(image).save(f, format='PNG'))
