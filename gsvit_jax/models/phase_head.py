"""The GSViT paper's Cholec80 phase head: an MLP on the frozen encoder's latent.

Flattened 6144-d latent (the paper's choice: 13,642,759 parameters, "13.7M") or the pooled
384-d vector (1,846,279) -> 2048 -> 512 -> 7, each hidden layer Linear -> ELU -> LayerNorm ->
Dropout(0.1). Layer names follow a PyTorch `nn.Sequential` of the same layers (fc1, norm1, ...).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from gsvit_jax.models.gsvit import flatten_latent

NUM_PHASES = 7
HIDDEN = (2048, 512)


def head_input(features: jnp.ndarray, pooled: bool) -> jnp.ndarray:
    """Encoder features (B, h, w, C) -> (B, C) pooled or (B, C*h*w) flattened channel-major."""
    return jnp.mean(features, axis=(1, 2)) if pooled else flatten_latent(features)


class PhaseHead(nn.Module):
    """(B, D) latent -> (B, num_classes) phase logits."""

    hidden: Sequence[int] = HIDDEN
    num_classes: int = NUM_PHASES
    dropout: float = 0.1

    @nn.compact
    def __call__(self, latent: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = latent.astype(jnp.float32)
        for i, width in enumerate(self.hidden, start=1):
            x = nn.elu(nn.Dense(width, name=f'fc{i}')(x))
            x = nn.LayerNorm(epsilon=1e-5, name=f'norm{i}')(x)
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name=f'fc{len(self.hidden) + 1}')(x)
