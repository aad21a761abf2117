"""Frames -> model input. GSViT was pre-trained on OpenCV frames: **BGR**, scaled to [0, 1], no
mean/std normalisation, bilinearly resized (no antialiasing, like `F.interpolate`) to 224x224.

The caller must say which channel order the frames are in; nothing is guessed.
"""
from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

ChannelOrder = Literal['rgb', 'bgr']


def preprocess(frames: np.ndarray | jax.Array, *, channel_order: ChannelOrder,
               size: int = 224) -> jax.Array:
    """uint8 frames (H, W, 3) or (B, H, W, 3) of any size -> float32 (B, size, size, 3), BGR in [0, 1].

    `channel_order` is the order of the *input*: 'rgb' for PIL/PyAV/imageio frames (they are
    swapped to BGR), 'bgr' for OpenCV frames (kept).
    """
    check_channel_order(channel_order)
    return resize_to_model_input(as_frame_batch(jnp.asarray(frames)), channel_order, size)


def check_channel_order(channel_order: str) -> None:
    if channel_order not in ('rgb', 'bgr'):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")


def as_frame_batch(frames: np.ndarray | jax.Array) -> np.ndarray | jax.Array:
    """uint8 (H, W, 3) or (B, H, W, 3) -> (B, H, W, 3); anything else is refused, naming it."""
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f'expected frames (H, W, 3) or (B, H, W, 3), got shape {frames.shape}')
    if frames.dtype != np.uint8:
        raise ValueError(f'expected uint8 frames in [0, 255], got dtype {frames.dtype}')
    return frames


def resize_to_model_input(frames: jax.Array, channel_order: ChannelOrder, size: int) -> jax.Array:
    """uint8 (B, H, W, 3) -> float32 (B, size, size, 3), BGR in [0, 1] (traceable)."""
    x = frames.astype(jnp.float32) / 255.0
    if channel_order == 'rgb':
        x = x[..., ::-1]
    if x.shape[1:3] != (size, size):
        x = jax.image.resize(x, (x.shape[0], size, size, 3), 'bilinear', antialias=False)
    return x
