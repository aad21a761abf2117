"""A 2-D map of latents: PCA to two axes, drawn as a labelled scatter plot with PIL (the package
has no plotting dependency). Used by notebooks/embeddings.ipynb."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

# Distinct colours for up to 10 labels (repeated beyond that).
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def pca_2d(latents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) -> ((N, 2) coordinates on the two main axes, (2,) fraction of variance each
    explains). Computed in float64 from the centred data's SVD; the sign of each axis is fixed so
    that its largest coordinate is positive (the map does not flip between runs)."""
    x = np.asarray(latents, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f'pca_2d needs (N >= 2, D) latents, got shape {x.shape}')
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    points = u[:, :2] * s[:2]
    if points.shape[1] < 2:  # a single feature: the second axis is flat
        points = np.pad(points, ((0, 0), (0, 2 - points.shape[1])))
    signs = np.sign(points[np.abs(points).argmax(axis=0), [0, 1]])
    points = points * np.where(signs == 0, 1.0, signs)
    variance = np.square(s)
    explained = variance[:2] / max(float(variance.sum()), np.finfo(np.float64).tiny)
    return points, np.pad(explained, (0, 2 - len(explained)))


def scatter_picture(points: np.ndarray, labels: Sequence[str], title: str,
                    size: int = 480) -> np.ndarray:
    """RGB uint8 picture of `points` (N, 2), one colour per distinct label (in order of first
    appearance), with a legend and `title`."""
    points = np.asarray(points, np.float64)
    if len(points) != len(labels):
        raise ValueError(f'{len(points)} points but {len(labels)} labels')
    names = list(dict.fromkeys(labels))
    legend_width = 12 + 7 * max([len(str(n)) for n in names] + [1])
    image = Image.new('RGB', (size + legend_width, size + 24), 'white')
    draw = ImageDraw.Draw(image)
    draw.text((6, 4), title, fill='black')
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    xy = 12 + (points - low) / span * (size - 24)
    xy[:, 1] = size + 24 - xy[:, 1]  # y grows upwards
    colour = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    for (x, y), label in zip(xy, labels):
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour[label])
    for i, name in enumerate(names):
        top = 28 + 16 * i
        draw.rectangle((size + 2, top, size + 10, top + 8), fill=colour[name])
        draw.text((size + 14, top - 2), str(name), fill='black')
    return np.asarray(image)
