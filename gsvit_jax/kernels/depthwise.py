"""Depthwise k x k convolutions (PyTorch `groups == channels`) on the CPU: XLA's shifted
multiply-adds, or oneDNN's depthwise kernel for inference (`onednn_depthwise.cc`).

XLA:CPU runs the grouped convolution 10-50x slower than the same sum of k*k shifted multiplies, so
that sum is the CPU formulation (`shifted_sum`, with gradients). It is taken in float32 and rounded
once: in bfloat16 XLA:CPU would round after every multiply and add. oneDNN's forward (`forward`)
is faster still, in bfloat16 most (benchmarks/RESULTS.md); its gradients are the shifted sum's.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gsvit_jax.kernels import onednn


def shifted_sum(x: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray | None,
                residual: jnp.ndarray | None, stride: int, padding: int,
                relu: bool = False) -> jnp.ndarray:
    """NHWC x (B, H, W, C) * kernel (k, k, 1, C) + bias, ReLU'd if `relu`, + residual, summed in
    float32 (or wider) and rounded once to x's dtype; the kernel is rounded to x's dtype first, the
    float32 bias is not (as in oneDNN's kernels)."""
    k, s, p = kernel.shape[0], stride, padding
    total = jnp.promote_types(x.dtype, jnp.float32)
    kernel = kernel.astype(x.dtype).astype(total)
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    ho, wo = (xp.shape[1] - k) // s + 1, (xp.shape[2] - k) // s + 1
    y = sum(xp[:, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s].astype(total)
            * kernel[i, j, 0] for i in range(k) for j in range(k))
    y = y if bias is None else y + bias.astype(total)
    y = jax.nn.relu(y) if relu else y
    y = y if residual is None else residual.astype(x.dtype).astype(total) + y
    return y.astype(x.dtype)


def _out_shape(x, kernel, stride, padding):
    k = kernel.shape[0]
    n, h, w, c = x.shape
    return (n, (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1, c)


def _attrs(stride, padding, relu, out_shape, kernel):
    macs = int(np.prod(out_shape)) * kernel.shape[0] * kernel.shape[1]
    return dict(stride=np.int64(stride), pad=np.int64(padding), relu=relu,
                threads=onednn.threads(macs))


def _forward_call(x, kernel, bias, stride, padding, relu):
    out = jax.ShapeDtypeStruct(_out_shape(x, kernel, stride, padding), x.dtype)
    return jax.ffi.ffi_call(onednn.HANDLERS['depthwise'][0], out, vmap_method='sequential')(
        x, kernel, bias, **_attrs(stride, padding, relu, out.shape, kernel))


def _forward_residual_call(x, kernel, bias, residual, stride, padding, relu):
    out = jax.ShapeDtypeStruct(residual.shape, x.dtype)
    return jax.ffi.ffi_call(onednn.HANDLERS['depthwise_residual'][0], out,
                            vmap_method='sequential')(
        x, kernel, bias, residual, **_attrs(stride, padding, relu, out.shape, kernel))


_forward = onednn.rows_per_device(_forward_call, 3, 3, 'n h w c, i j k c, c -> n y x c')
_forward_residual = onednn.rows_per_device(_forward_residual_call, 4, 3,
                                           'n h w c, i j k c, c, n y x c -> n y x c',
                                           row_arrays=(0, 3))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _onednn_depthwise(x, kernel, bias, residual, stride, padding, relu):
    kernel, bias = kernel.astype(x.dtype).astype(jnp.float32), bias.astype(jnp.float32)
    if residual is None:
        return _forward(x, kernel, bias, stride, padding, relu)
    return _forward_residual(x, kernel, bias, residual.astype(x.dtype), stride, padding, relu)


def _depthwise_forward(x, kernel, bias, residual, stride, padding, relu):
    y = _onednn_depthwise(x, kernel, bias, residual, stride, padding, relu)
    return y, (x, kernel, bias, residual)


def _depthwise_backward(stride, padding, relu, saved, dy):
    _, vjp = jax.vjp(functools.partial(shifted_sum, stride=stride, padding=padding, relu=relu),
                     *saved)
    return vjp(dy)


_onednn_depthwise.defvjp(_depthwise_forward, _depthwise_backward)


def forward(x: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray | None = None,
            residual: jnp.ndarray | None = None, *, stride: int = 1, padding: int = 0,
            relu: bool = False) -> jnp.ndarray:
    """`shifted_sum`'s result (up to float32 summation order) through oneDNN where
    `onednn.use_onednn(x.dtype)`, else `shifted_sum` itself."""
    if not onednn.use_onednn(x.dtype):
        return shifted_sum(x, kernel, bias, residual, stride, padding, relu)
    if bias is None:
        bias = jnp.zeros((kernel.shape[-1],), jnp.float32)
    return _onednn_depthwise(x, kernel, bias, residual, stride, padding, relu)
