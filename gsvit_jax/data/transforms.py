"""Grain transforms: JPEG decode, resize, BGR, augmentations (pre-training pairs and Cholec80).

Outputs are uint8 **BGR** (GSViT's channel order) at the model's size; the train/eval steps
scale them to [0, 1] on the device (`to_model_input`), which moves 4x fewer bytes to the device.
"""
from __future__ import annotations

import dataclasses
import io
from typing import Any

import grain
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter


def decode_jpeg(data: bytes | np.ndarray) -> Image.Image:
    """JPEG/PNG bytes (as stored by the builders) -> RGB PIL image."""
    raw = data.tobytes() if isinstance(data, np.ndarray) else data
    return Image.open(io.BytesIO(raw)).convert('RGB')


def to_bgr_array(image: Image.Image, size: int | None = None) -> np.ndarray:
    """PIL RGB -> uint8 BGR (H, W, 3), bilinearly resized to size x size when given."""
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return np.ascontiguousarray(np.asarray(image, np.uint8)[..., ::-1])


def to_model_input(images: Any) -> jnp.ndarray:
    """uint8 BGR batch -> float32 in [0, 1], what the GSViT encoder expects."""
    return jnp.asarray(images).astype(jnp.float32) / 255.0


@dataclasses.dataclass
class DecodePair(grain.transforms.Map):
    """Decode both frames of a pair and resize them to `size` (uint8 BGR)."""

    size: int = 224

    def map(self, element: dict[str, Any]) -> dict[str, Any]:
        out = dict(element)
        for key in ('frame', 'next_frame'):
            out[key] = to_bgr_array(decode_jpeg(element[key]), self.size)
        return out


@dataclasses.dataclass
class FlipPair(grain.transforms.RandomMap):
    """Optional pre-training augmentation: the same horizontal flip on both frames of a pair."""

    probability: float = 0.5

    def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        if rng.random() >= self.probability:
            return element
        return {**element, 'frame': element['frame'][:, ::-1].copy(),
                'next_frame': element['next_frame'][:, ::-1].copy()}


def _photometric(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Brightness, contrast, saturation and hue jitter in random order."""
    def hue(im: Image.Image) -> Image.Image:
        h, s, v = im.convert('HSV').split()
        shift = int(round(rng.uniform(-0.05, 0.05) * strength * 255))
        h = h.point(lambda p: (p + shift) % 256)
        return Image.merge('HSV', (h, s, v)).convert('RGB')

    ops = [lambda im: ImageEnhance.Brightness(im).enhance(1 + rng.uniform(-strength, strength)),
           lambda im: ImageEnhance.Contrast(im).enhance(1 + rng.uniform(-strength, strength)),
           lambda im: ImageEnhance.Color(im).enhance(1 + rng.uniform(-strength, strength)),
           hue]
    for k in rng.permutation(len(ops)):
        image = ops[k](image)
    return image


def _random_resized_crop(image: Image.Image, rng: np.random.Generator, size: int,
                         scale: tuple[float, float]) -> Image.Image:
    """Crop a random area fraction in `scale` with aspect ratio in [3/4, 4/3], resize to size."""
    width, height = image.size
    for _ in range(10):
        area = width * height * rng.uniform(*scale)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        w, h = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
        if 0 < w <= width and 0 < h <= height:
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return image.resize((size, size), Image.BILINEAR, box=(x, y, x + w, y + h))
    return image.resize((size, size), Image.BILINEAR)


@dataclasses.dataclass
class PhaseTrainAugment(grain.transforms.RandomMap):
    """Cholec80 training augmentation: random resized crop, horizontal flip, photometric distortion
    and Gaussian blur (the two the GSViT paper names), then uint8 BGR at `size`."""

    size: int = 224
    crop_scale: tuple[float, float] = (0.6, 1.0)
    flip_probability: float = 0.5
    photometric_strength: float = 0.2
    blur_probability: float = 0.3
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        image = _random_resized_crop(decode_jpeg(element['image']), rng, self.size, self.crop_scale)
        if rng.random() < self.flip_probability:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        image = _photometric(image, rng, self.photometric_strength)
        if rng.random() < self.blur_probability:
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*self.blur_sigma)))
        return {**element, 'image': to_bgr_array(image)}


@dataclasses.dataclass
class PhaseEvalTransform(grain.transforms.Map):
    """Cholec80 evaluation: decode and resize only (uint8 BGR at `size`)."""

    size: int = 224

    def map(self, element: dict[str, Any]) -> dict[str, Any]:
        return {**element, 'image': to_bgr_array(decode_jpeg(element['image']), self.size)}


@dataclasses.dataclass
class SelectFields(grain.transforms.Map):
    """Keep only the named fields (drops strings etc. that should not be batched)."""

    fields: tuple[str, ...]

    def map(self, element: dict[str, Any]) -> dict[str, Any]:
        return {k: element[k] for k in self.fields}
