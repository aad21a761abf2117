"""BatchNorm with PyTorch's semantics and variable names, so weights convert by renaming.

Differences from `flax.linen.BatchNorm` that matter for PyTorch interop:
- momentum is PyTorch's (new = (1 - m) * old + m * batch, m = 0.1);
- the running variance is updated with the *unbiased* batch variance, as PyTorch does;
- variables are named `weight`, `bias` (params) and `running_mean`, `running_var`,
  `num_batches_tracked` (collection `batch_stats`), exactly like a PyTorch state_dict.
Statistics are reduced over every axis but the last (channels-last). Under `jax.jit` with the batch
sharded over a mesh, the mean is taken over the *global* batch, like SyncBatchNorm.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class BatchNorm(nn.Module):
    """Channels-last BatchNorm matching `torch.nn.BatchNorm{1,2}d` in train and eval mode."""

    momentum: float = 0.1
    epsilon: float = 1e-5
    weight_init: float = 1.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        channels = x.shape[-1]
        weight = self.param('weight', nn.initializers.constant(self.weight_init), (channels,))
        bias = self.param('bias', nn.initializers.zeros, (channels,))
        running_mean = self.variable('batch_stats', 'running_mean', jnp.zeros, (channels,), jnp.float32)
        running_var = self.variable('batch_stats', 'running_var', jnp.ones, (channels,), jnp.float32)
        num_batches = self.variable('batch_stats', 'num_batches_tracked', jnp.zeros, (), jnp.int32)

        if train:
            axes = tuple(range(x.ndim - 1))
            xf = x.astype(jnp.float32)
            mean = jnp.mean(xf, axis=axes)
            var = jnp.mean(jnp.square(xf - mean), axis=axes)  # biased: used to normalise
            if not self.is_initializing():
                n = xf.size // channels
                unbiased = var * (n / max(n - 1, 1))
                m = self.momentum
                running_mean.value = (1.0 - m) * running_mean.value + m * mean
                running_var.value = (1.0 - m) * running_var.value + m * unbiased
                num_batches.value = num_batches.value + 1
        else:
            mean, var = running_mean.value, running_var.value

        scale = weight * jnp.reciprocal(jnp.sqrt(var + self.epsilon))
        shift = bias - mean * scale
        return (x * scale.astype(self.dtype) + shift.astype(self.dtype)).astype(self.dtype)
