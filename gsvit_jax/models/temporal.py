"""Online (causal) temporal phase model over per-second latents: a multi-stage causal TCN.

Each stage is a stack of residual dilated causal convolutions (kernel 3, dilation 1, 2, 4, ...;
MS-TCN/TeCNO style, with left-only padding), so the prediction at second t uses seconds <= t only
and the model runs live. Later stages refine the softmax of the previous stage. `step` advances
one second with per-layer histories (O(layers * channels^2) per frame, independent of video
length) and gives exactly the full-sequence output.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gsvit_jax.models.phase_head import NUM_PHASES


class CausalConv(nn.Module):
    """Kernel-3 dilated causal 1-D conv: y[t] = W0 x[t-2d] + W1 x[t-d] + W2 x[t] + b."""

    features: int
    dilation: int

    def setup(self):
        self.kernel = self.param('kernel', nn.initializers.lecun_normal(),
                                 (3, self.features, self.features))
        self.bias = self.param('bias', nn.initializers.zeros, (self.features,))

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:  # (B, T, C) -> (B, T, C)
        y = jax.lax.conv_general_dilated(x, self.kernel, window_strides=(1,),
                                         padding=[(2 * self.dilation, 0)],
                                         rhs_dilation=(self.dilation,),
                                         dimension_numbers=('NWC', 'WIO', 'NWC'))
        return y + self.bias

    def step(self, x: jnp.ndarray, history: jnp.ndarray) -> jnp.ndarray:
        """x (B, C) at time t; history (B, 2d, C) = inputs t-2d .. t-1 (oldest first)."""
        d = self.dilation
        return (history[:, 0] @ self.kernel[0] + history[:, d] @ self.kernel[1]
                + x @ self.kernel[2] + self.bias)


class CausalResidual(nn.Module):
    """x + Dropout(Dense(ReLU(CausalConv(x))))."""

    features: int
    dilation: int
    dropout: float

    def setup(self):
        self.conv = CausalConv(self.features, self.dilation)
        self.pointwise = nn.Dense(self.features)
        self.drop = nn.Dropout(self.dropout)

    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        y = self.pointwise(nn.relu(self.conv(x)))
        return x + self.drop(y, deterministic=not train)

    def step(self, x: jnp.ndarray, history: jnp.ndarray) -> jnp.ndarray:
        return x + self.pointwise(nn.relu(self.conv.step(x, history)))


class CausalStage(nn.Module):
    """Dense in -> `num_layers` causal residual layers (dilation 2**i) -> Dense to classes."""

    features: int
    num_layers: int
    num_classes: int
    dropout: float

    def setup(self):
        self.proj_in = nn.Dense(self.features)
        self.layers = [CausalResidual(self.features, 2 ** i, self.dropout)
                       for i in range(self.num_layers)]
        self.proj_out = nn.Dense(self.num_classes)

    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = self.proj_in(x)
        for layer in self.layers:
            x = layer(x, train)
        return self.proj_out(x)

    def step(self, x: jnp.ndarray, histories: list[jnp.ndarray]) -> tuple[jnp.ndarray, list]:
        """One time step; returns logits (B, K) and the updated per-layer histories."""
        x = self.proj_in(x)
        new = []
        for layer, history in zip(self.layers, histories):
            new.append(jnp.concatenate([history[:, 1:], x[:, None]], axis=1))
            x = layer.step(x, history)
        return self.proj_out(x), new


class CausalTCN(nn.Module):
    """(B, T, D) latents -> (num_stages, B, T, num_classes) logits; the last stage predicts."""

    features: int = 64
    num_layers: int = 10
    num_stages: int = 2
    num_classes: int = NUM_PHASES
    dropout: float = 0.5
    input_dropout: float = 0.5

    def setup(self):
        self.input_drop = nn.Dropout(self.input_dropout)
        self.stages = [CausalStage(self.features, self.num_layers, self.num_classes, self.dropout)
                       for _ in range(self.num_stages)]

    def __call__(self, latents: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = self.input_drop(latents.astype(jnp.float32), deterministic=not train)
        outputs = []
        for stage in self.stages:
            logits = stage(x, train)
            outputs.append(logits)
            x = jax.nn.softmax(logits, axis=-1)
        return jnp.stack(outputs)

    def step(self, latent: jnp.ndarray, histories: list[list[jnp.ndarray]]
             ) -> tuple[jnp.ndarray, list[list[jnp.ndarray]]]:
        """One second: latent (B, D) -> last-stage logits (B, K) and the new histories."""
        x, new = latent.astype(jnp.float32), []
        for stage, stage_histories in zip(self.stages, histories):
            logits, updated = stage.step(x, stage_histories)
            new.append(updated)
            x = jax.nn.softmax(logits, axis=-1)
        return logits, new

    def initial_histories(self, batch: int = 1) -> list[list[jnp.ndarray]]:
        """Zero histories (what the causal padding feeds the first 2d steps)."""
        return [[jnp.zeros((batch, 2 * 2 ** i, self.features), jnp.float32)
                 for i in range(self.num_layers)] for _ in range(self.num_stages)]

    @property
    def receptive_field(self) -> int:
        """Seconds of history that can influence one prediction."""
        return self.num_stages * 2 * (2 ** self.num_layers - 1) + 1


def temporal_logits(model: CausalTCN, variables: Any, latents: jnp.ndarray) -> jnp.ndarray:
    """Last-stage logits (B, T, K) in eval mode."""
    return model.apply(variables, latents)[-1]
