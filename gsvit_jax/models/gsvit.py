"""GSViT encoder: EfficientViT-M5 without head or pooling, and its 6144-d latent.

(B, 224, 224, 3) BGR in [0, 1] -> features (B, 4, 4, 384) -> latent (B, 6144) flattened in
PyTorch's channel-major order (index c*16 + h*4 + w), which the decoder and phase head consume.
"""
from __future__ import annotations

from typing import Any

import einops
import jax.numpy as jnp

from gsvit_jax.models.efficientvit import EfficientViT, efficientvit, stage_resolutions

LATENT_CHANNELS = 384


def gsvit_encoder(img_size: int = 224, *, fused: bool = False,
                  dtype: Any = jnp.float32) -> EfficientViT:
    """The GSViT encoder (12,088,004 parameters); `fused=True` takes `fold_batchnorm` weights."""
    return efficientvit('m5', num_classes=0, img_size=img_size, fused=fused, dtype=dtype)


def latent_dim(img_size: int = 224) -> int:
    """Size of the flattened latent: 384 * side^2 (6144 at 224)."""
    side = stage_resolutions(img_size)[-1]
    return LATENT_CHANNELS * side * side


def flatten_latent(features: jnp.ndarray) -> jnp.ndarray:
    """(B, h, w, C) channels-last features -> (B, C*h*w) in PyTorch's C-major order."""
    return einops.rearrange(features, 'b h w c -> b (c h w)')


def unflatten_latent(latent: jnp.ndarray, side: int = 4) -> jnp.ndarray:
    """Inverse of `flatten_latent`: (B, C*side*side) -> (B, side, side, C)."""
    return einops.rearrange(latent, 'b (c h w) -> b h w c', h=side, w=side)
