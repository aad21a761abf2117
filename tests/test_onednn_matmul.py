"""oneDNN matrix products (gsvit_jax.kernels.matmul): the same numbers as XLA's dot, forward,
with the fused ReLU or residual and backward, bfloat16 on AMX, sharded over devices without
gathering."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gsvit_jax.kernels import matmul, onednn

ROWS = 1024


def inputs(shape, k, n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(*shape, k)).astype(np.float32)
    kernel = (rng.normal(size=(k, n)) / np.sqrt(k)).astype(np.float32)
    bias = rng.normal(size=(n,)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(kernel), jnp.asarray(bias)


@pytest.fixture(autouse=True)
def onednn_on(monkeypatch):
    if not onednn.available():
        pytest.skip('oneDNN kernels unavailable here (test_onednn checks where they must build)')
    monkeypatch.setattr(onednn, 'CONV_IMPL', 'onednn')


def loss(dense, relu):
    return lambda x, k, b: jnp.sum(jnp.sin(dense(x, k, b, relu=relu)))


@pytest.mark.parametrize('relu', [False, True])
def test_forward_and_gradients_match_xla(relu):
    x, kernel, bias = inputs((4, 16, 64), 128, 512)  # a (B, H, W, C) map: 2 ** 26 MACs
    fn = jax.jit(lambda x, k, b: matmul.dense(x, k, b, relu=relu))
    assert 'gsvit_onednn_matmul' in fn.lower(x, kernel, bias).as_text()
    got, want = fn(x, kernel, bias), matmul.xla_dense(x, kernel, bias, relu)
    assert got.shape == (4, 16, 64, 512)
    if relu:
        assert 0.2 < float(jnp.mean(got == 0)) < 0.8
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    no_bias = jax.jit(lambda x, k: matmul.dense(x, k))(x, kernel)
    np.testing.assert_allclose(no_bias, matmul.xla_dense(x, kernel, None), rtol=1e-5, atol=1e-5)
    grads = jax.jit(jax.grad(loss(matmul.dense, relu), argnums=(0, 1, 2)))(x, kernel, bias)
    ref = jax.grad(loss(lambda x, k, b, relu: matmul.xla_dense(x, k, b, relu), relu),
                   argnums=(0, 1, 2))(x, kernel, bias)
    for g, w in zip(grads, ref):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_small_float32_products_use_xla_and_bfloat16_always_onednn():
    x, kernel, bias = inputs((2, 7, 7), 16, 8)  # 98 rows: the encoder's last stages at batch 1
    lowered = lambda x: jax.jit(lambda x: matmul.dense(x, kernel, bias)).lower(x).as_text()  # noqa
    assert 'gsvit_onednn_matmul' not in lowered(x) and 'dot_general' in lowered(x)
    assert 'gsvit_onednn_matmul' in lowered(x.astype(jnp.bfloat16))


def test_wide_linear_layer_of_few_rows():
    """The decoder's linear layer shape, scaled down: 8 rows, a weight far wider than tall (read
    in place in float32, transposed for the input gradient)."""
    x, kernel, bias = inputs((8,), 1024, 8192)
    fn = jax.jit(lambda x, k, b: matmul.dense(x, k, b))
    assert 'gsvit_onednn_matmul' in fn.lower(x, kernel, bias).as_text()
    np.testing.assert_allclose(fn(x, kernel, bias), matmul.xla_dense(x, kernel, bias),
                               rtol=1e-5, atol=1e-5)
    grads = jax.jit(jax.grad(loss(matmul.dense, False), argnums=(0, 1, 2)))(x, kernel, bias)
    ref = jax.grad(loss(lambda x, k, b, relu: matmul.xla_dense(x, k, b, relu), False),
                   argnums=(0, 1, 2))(x, kernel, bias)
    for g, w in zip(grads, ref):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
    got = jax.jit(lambda x, k, b: matmul.dense(x.astype(jnp.bfloat16), k, b))(x, kernel, bias)
    assert got.dtype == jnp.bfloat16
    want = matmul.xla_dense(x, kernel, bias)
    assert float(jnp.abs(got.astype(jnp.float32) - want).max()) < 2e-2 * float(jnp.abs(want).max())


def test_bfloat16_within_rounding_and_parameter_gradients_float32():
    x, kernel, bias = inputs((ROWS,), 64, 48)
    got = jax.jit(lambda x, k, b: matmul.dense(x.astype(jnp.bfloat16), k, b))(x, kernel, bias)
    want = matmul.xla_dense(x, kernel, bias)
    assert got.dtype == jnp.bfloat16
    scale = float(jnp.abs(want).max())
    assert float(jnp.abs(got.astype(jnp.float32) - want).max()) < 2e-2 * scale
    bf16_loss = lambda dense: lambda x, k, b: jnp.sum(  # noqa: E731
        dense(x.astype(jnp.bfloat16), k, b).astype(jnp.float32) ** 2)
    grads = jax.jit(jax.grad(bf16_loss(matmul.dense), argnums=(0, 1, 2)))(x, kernel, bias)
    rounded = lambda a: a.astype(jnp.bfloat16).astype(jnp.float32)  # noqa: E731
    ref = jax.grad(lambda x, k, b: jnp.sum(matmul.xla_dense(rounded(x), rounded(k), b) ** 2),
                   argnums=(0, 1, 2))(x, kernel, bias)
    assert [g.dtype for g in grads] == [jnp.float32] * 3
    for g, w in zip(grads, ref):
        assert float(jnp.abs(g - w).max()) < 2e-2 * float(jnp.abs(w).max())


@pytest.mark.parametrize('rows', [196, 4096])  # bf16 weight read in place / reordered to blocked
def test_bfloat16_kernel_cast_once_gives_the_same_numbers(rows):
    """A kernel cast to bfloat16 once (read in place, no per-call conversion) gives what the
    float32 kernel gives, rounded by the handler: forward and the input gradient."""
    x, kernel, bias = inputs((rows,), 96, 160)
    x = x.astype(jnp.bfloat16)
    fn = jax.jit(lambda x, k, b: matmul.dense(x, k, b, relu=True))
    got, want = fn(x, kernel.astype(jnp.bfloat16), bias), fn(x, kernel, bias)
    assert got.dtype == jnp.bfloat16 and 0.2 < float(jnp.mean(got == 0)) < 0.8
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
    reference = matmul.xla_dense(x.astype(jnp.float32), kernel, bias, relu=True)
    assert float(jnp.abs(got.astype(jnp.float32) - reference).max()) < 2e-2 * float(
        jnp.abs(reference).max())
    grad_x = jax.jit(jax.grad(lambda x, k: jnp.sum(jnp.sin(
        matmul.dense(x, k, bias).astype(jnp.float32)))))
    np.testing.assert_array_equal(np.asarray(grad_x(x, kernel.astype(jnp.bfloat16)), np.float32),
                                  np.asarray(grad_x(x, kernel), np.float32))


def test_sharded_rows_per_device_and_summed_weight_gradients():
    mesh = Mesh(np.array(jax.devices()[:8]), ('data',))
    x, kernel, bias = inputs((16, 16, 64), 128, 256)  # 16384 rows, 2048 per device
    sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec('data')))
    fn = jax.jit(lambda x, k, b: matmul.dense(x, k, b, relu=True))
    text = fn.lower(sharded, kernel, bias).compile().as_text()
    assert 'gsvit_onednn_matmul' in text and 'all-gather' not in text
    out = fn(sharded, kernel, bias)
    assert out.sharding.spec[0] == 'data'
    np.testing.assert_allclose(out, matmul.xla_dense(x, kernel, bias, True), rtol=1e-5, atol=1e-5)
    grad = jax.jit(jax.grad(loss(matmul.dense, True), argnums=(0, 1, 2)))
    text = grad.lower(sharded, kernel, bias).compile().as_text()
    assert 'gsvit_onednn_matmul_backward_weights' in text and 'all-gather' not in text
    got, want = grad(sharded, kernel, bias), grad(x, kernel, bias)
    assert got[0].sharding.spec[0] == 'data'
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)


def residual_loss(dense):
    return lambda x, k, b, r: jnp.sum(jnp.sin(dense(x, k, b, residual=r).astype(jnp.float32)))


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_residual_added_inside_the_product(dtype):
    """x @ k + b + r with r summed inside oneDNN's product (float32: sgemm onto r + b; bfloat16: a
    binary post-op, rounded once): XLA's numbers, and r's gradient is the output's."""
    x, kernel, bias = inputs((4, 16, 64), 128, 512)
    r = jnp.asarray(np.random.default_rng(1).normal(size=(4, 16, 64, 512)), dtype)
    x = x.astype(dtype)
    fn = jax.jit(lambda x, k, b, r: matmul.dense(x, k, b, residual=r))
    assert 'gsvit_onednn_matmul_residual' in fn.lower(x, kernel, bias, r).as_text()
    got = fn(x, kernel, bias, r)
    assert got.dtype == dtype and got.shape == r.shape
    f32 = lambda a: a.astype(jnp.float32)  # noqa: E731
    want = matmul.xla_dense(f32(x), f32(kernel.astype(dtype)), bias) + f32(r)
    # bfloat16: one rounding of the float32 sum (half an ulp of 2^-8) and the products' order
    tol = 1e-5 if dtype == jnp.float32 else 2 ** -8 * float(jnp.abs(want).max())
    np.testing.assert_allclose(f32(got), want, rtol=1e-5, atol=tol)
    grads = jax.jit(jax.grad(residual_loss(matmul.dense), argnums=(0, 1, 2, 3)))(
        x, kernel, bias, r)
    # the reference in float32 (XLA's bfloat16 gradients would sum in bfloat16)
    ref = jax.grad(residual_loss(lambda x, k, b, residual: matmul.xla_dense(
        x, k, b, residual=residual)), argnums=(0, 1, 2, 3))(
            f32(x), f32(kernel.astype(dtype)), bias, f32(r))
    assert [g.dtype for g in grads] == [dtype, jnp.float32, jnp.float32, dtype]
    for g, w in zip(grads, ref):
        tol = (1e-5 if dtype == jnp.float32 else 3e-2) * float(jnp.abs(f32(w)).max())
        assert float(jnp.abs(f32(g) - f32(w)).max()) < tol


def test_residual_rows_sharded_with_the_activations():
    mesh = Mesh(np.array(jax.devices()[:8]), ('data',))
    x, kernel, bias = inputs((16, 16, 64), 128, 256)
    r = jnp.asarray(np.random.default_rng(1).normal(size=(16, 16, 64, 256)), jnp.float32)
    rows = NamedSharding(mesh, PartitionSpec('data'))
    fn = jax.jit(lambda x, k, b, r: matmul.dense(x, k, b, residual=r))
    args = (jax.device_put(x, rows), kernel, bias, jax.device_put(r, rows))
    text = fn.lower(*args).compile().as_text()
    assert 'gsvit_onednn_matmul_residual' in text and 'all-gather' not in text
    out = fn(*args)
    assert out.sharding.spec[0] == 'data'
    np.testing.assert_allclose(out, matmul.xla_dense(x, kernel, bias) + r, rtol=1e-5, atol=1e-5)


def test_residual_with_relu_or_of_another_shape_is_refused():
    x, kernel, bias = inputs((64,), 16, 8)
    with pytest.raises(ValueError, match='residual'):
        matmul.dense(x, kernel, bias, relu=True, residual=jnp.zeros((64, 8)))
    with pytest.raises(ValueError, match='residual'):
        matmul.dense(x, kernel, bias, residual=jnp.zeros((64, 16)))
