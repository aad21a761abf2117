"""oneDNN matrix products for XLA:CPU (`onednn_matmul.cc`): the encoder's 1x1 convolutions.

In bfloat16 XLA:CPU computes dots in float32 with converts around them; oneDNN runs them on AMX /
AVX-512-BF16 (~10x the GFLOP/s on an AMX Xeon), and in float32 it too is faster on these shapes
(benchmarks/RESULTS.md). Same switches as the convolutions (`onednn.use_onednn`); elsewhere, or
for other dtypes, `dense` is `jnp.dot`.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gsvit_jax.kernels import onednn


# float32 products of fewer multiply-adds than this go to XLA's dot: oneDNN's per-call cost
# outweighs its speed there (GSViT at batch 1, at most 196 x 192 x 384 = 14M: 9.5 ms with XLA's
# dots, 12.6 ms with oneDNN's). bfloat16 ones always go to oneDNN (XLA computes them in float32).
MIN_FLOAT32_MACS = 2 ** 26


def xla_dense(x: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray | None,
              relu: bool = False, residual: jnp.ndarray | None = None) -> jnp.ndarray:
    """The same product with XLA's dot (the reference and the fallback)."""
    y = jnp.dot(x, kernel.astype(x.dtype))
    y = y if bias is None else y + bias.astype(x.dtype)
    y = jax.nn.relu(y) if relu else y
    return y if residual is None else y + residual


def _threads(x, kernel):
    """The OpenMP team of a forward product (one thread for a small one, `onednn.threads`)."""
    return onednn.threads(x.shape[0] * kernel.shape[0] * kernel.shape[1])


def _forward_call(x, kernel, bias, relu: bool):
    """y (M, N) in x's dtype from x (M, K), kernel (K, N) (float32, or bfloat16 with bfloat16 x)
    and float32 bias (N,)."""
    out = jax.ShapeDtypeStruct((x.shape[0], kernel.shape[1]), x.dtype)
    return jax.ffi.ffi_call(onednn.HANDLERS['matmul'][0], out, vmap_method='sequential')(
        x, kernel, bias, relu=relu, threads=_threads(x, kernel))


def _forward_residual_call(x, kernel, bias, residual):
    """x @ kernel + bias + residual (M, N), summed inside the product (as `_forward_call`)."""
    out = jax.ShapeDtypeStruct(residual.shape, x.dtype)
    return jax.ffi.ffi_call(onednn.HANDLERS['matmul_residual'][0], out,
                            vmap_method='sequential')(
        x, kernel, bias, residual, relu=False, threads=_threads(x, kernel))


def _backward_data_call(dy, kernel):
    """dx (M, K) = dy (M, N) @ kernel^T, in dy's dtype (kernel as in `_forward_call`)."""
    out = jax.ShapeDtypeStruct((dy.shape[0], kernel.shape[0]), dy.dtype)
    return jax.ffi.ffi_call(onednn.HANDLERS['matmul_backward_data'][0], out,
                            vmap_method='sequential')(dy, kernel, threads=onednn.threads())


def _backward_weights_call(x, dy):
    """dkernel (K, N) = x^T @ dy, float32."""
    out = jax.ShapeDtypeStruct((x.shape[1], dy.shape[1]), jnp.float32)
    return jax.ffi.ffi_call(onednn.HANDLERS['matmul_backward_weights'][0], out,
                            vmap_method='sequential')(x, dy, threads=onednn.threads())


_forward = onednn.rows_per_device(_forward_call, 3, 1, 'm k, k n, n -> m n')
_forward_residual = onednn.rows_per_device(_forward_residual_call, 4, 0,
                                           'm k, k n, n, m n -> m n', row_arrays=(0, 3))
_backward_data = onednn.rows_per_device(_backward_data_call, 2, 0, 'm n, k n -> m k')
_backward_weights = onednn.summed_over_rows(_backward_weights_call, 0, 'm k, m n -> k n')


def _kernel_for(x, kernel):
    """The kernel as the oneDNN handlers take it: float32, or as it is (float32 or bfloat16) for
    bfloat16 x: a kernel cast to bfloat16 once is read in place, with no per-call conversion."""
    if x.dtype == jnp.bfloat16 and kernel.dtype == jnp.bfloat16:
        return kernel
    return kernel.astype(jnp.float32)


# On 2-D views (M, K): a batch-sharded (B, ..., K) activation stays sharded by rows when flattened.
@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _onednn_dense(x, kernel, bias, relu):
    return _forward(x, _kernel_for(x, kernel), bias.astype(jnp.float32), relu)


def _dense_forward(x, kernel, bias, relu):
    y = _onednn_dense(x, kernel, bias, relu)
    return y, (x, kernel, y if relu else None)


def _dense_backward(relu, residuals, dy):
    x, kernel, y = residuals
    if relu:
        dy = jnp.where(y > 0, dy, 0)
    dy = dy.astype(x.dtype)
    dx = _backward_data(dy, _kernel_for(x, kernel))
    dkernel = _backward_weights(x, dy)
    return dx, dkernel.astype(kernel.dtype), jnp.sum(dy, axis=0, dtype=jnp.float32)


_onednn_dense.defvjp(_dense_forward, _dense_backward)


@jax.custom_vjp
def _onednn_dense_residual(x, kernel, bias, residual):
    return _forward_residual(x, _kernel_for(x, kernel), bias.astype(jnp.float32), residual)


def _dense_residual_forward(x, kernel, bias, residual):
    return _onednn_dense_residual(x, kernel, bias, residual), (x, kernel)


def _dense_residual_backward(residuals, dy):
    x, kernel = residuals
    return (*_dense_backward(False, (x, kernel, None), dy), dy.astype(x.dtype))


_onednn_dense_residual.defvjp(_dense_residual_forward, _dense_residual_backward)


def dense(x: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray | None = None, *,
          relu: bool = False, residual: jnp.ndarray | None = None) -> jnp.ndarray:
    """x (..., K) @ kernel (K, N) + bias (N,), then ReLU if `relu`, in x's dtype (float32 or
    bfloat16; bfloat16 accumulates in float32): oneDNN or XLA (`onednn.use_onednn`). `residual`
    (..., N): added to the result in x's dtype, inside oneDNN's product (not with `relu`)."""
    out_shape = (*x.shape[:-1], kernel.shape[1])
    if residual is not None and (relu or residual.shape != out_shape):
        raise ValueError(f'dense: a residual of the output shape {out_shape} and no relu, got '
                         f'{residual.shape} with relu={relu}')
    residual = None if residual is None else residual.astype(x.dtype)
    rows = x.reshape(-1, x.shape[-1])
    macs = rows.shape[0] * kernel.shape[0] * kernel.shape[1]
    if not onednn.use_onednn(x.dtype) or (x.dtype == jnp.float32 and macs < MIN_FLOAT32_MACS):
        return xla_dense(x, kernel, bias, relu, residual)
    if bias is None:
        bias = jnp.zeros((kernel.shape[1],), jnp.float32)
    if residual is not None:
        y = _onednn_dense_residual(rows, kernel, bias, residual.reshape(rows.shape[0], -1))
        return y.reshape(out_shape)
    return _onednn_dense(rows, kernel, bias, relu).reshape(out_shape)


def worth_deferring(rows: int, k: int, n: int) -> bool:
    """Whether a (k, n) weight gradient is better kept as its factors x (rows, k), dy (rows, n):
    when they hold at most a quarter of its numbers (the decoder's 6144 x 50176 layer at batch 8:
    0.15%)."""
    return 4 * rows * (k + n) <= k * n


class WeightGrad(NamedTuple):
    """The weight gradient x^T @ dy of `dense`, kept as its factors: an optimizer that forms it
    tile by tile inside its update (`kernels.adam`) never stores the (K, N) array."""

    x: jnp.ndarray  # (M, K): the layer's input rows
    dy: jnp.ndarray  # (M, N): the gradient of its output rows

    def value(self) -> jnp.ndarray:
        """The (K, N) gradient, float32."""
        if onednn.use_onednn(self.x.dtype):
            return _backward_weights(self.x, self.dy.astype(self.x.dtype))
        return jnp.dot(self.x.T, self.dy, preferred_element_type=jnp.float32)

    def squared_norm(self) -> jnp.ndarray:
        """||x^T dy||^2 = sum((x x^T) * (dy dy^T)): two (M, M) Gram matrices, not the (K, N)."""
        x, dy = self.x.astype(jnp.float32), self.dy.astype(jnp.float32)
        return jnp.sum((x @ x.T) * (dy @ dy.T))
