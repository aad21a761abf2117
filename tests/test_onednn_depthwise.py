"""oneDNN depthwise convolution (gsvit_jax.kernels.depthwise): the shifted sum's numbers, with
bias, ReLU and residual inside, float32 and bfloat16, its gradients, sharded without gathering."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gsvit_jax.kernels import depthwise, onednn


@pytest.fixture(autouse=True)
def onednn_on(monkeypatch):
    if not onednn.available():
        pytest.skip('oneDNN kernels unavailable here (test_onednn checks where they must build)')
    monkeypatch.setattr(onednn, 'CONV_IMPL', 'onednn')


def inputs(dtype, stride, batch=4, size=14, channels=48, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(batch, size, size, channels)), dtype)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 1, channels)), jnp.float32)
    bias = jnp.asarray(rng.normal(size=(channels,)), jnp.float32)
    out = (size - 1) // stride + 1
    residual = jnp.asarray(rng.normal(size=(batch, out, out, channels)), dtype)
    return x, kernel, bias, residual


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('stride,relu,with_residual', [(1, False, True), (2, True, False),
                                                       (1, True, True), (2, False, False)])
def test_forward_matches_the_shifted_sum(dtype, stride, relu, with_residual):
    x, kernel, bias, residual = inputs(dtype, stride)
    residual = residual if with_residual else None
    fn = jax.jit(lambda *a: depthwise.forward(*a, stride=stride, padding=1, relu=relu))
    assert 'gsvit_onednn_depthwise' in fn.lower(x, kernel, bias, residual).as_text()
    got = fn(x, kernel, bias, residual)
    want = depthwise.shifted_sum(x, kernel, bias, residual, stride, 1, relu)
    assert got.dtype == dtype and got.shape == want.shape == (4, 14 // stride, 14 // stride, 48)
    if relu and not with_residual:
        assert float(jnp.mean(got == 0)) > 0.1
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    if dtype == jnp.float32:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    else:  # both round a float32 sum once: at most one bfloat16 step apart (2^-7 relative)
        assert np.all(np.abs(got - want) <= 2 ** -7 * np.abs(want))
        assert np.mean(got == want) > 0.95


def test_gradients_are_the_shifted_sums():
    x, kernel, bias, residual = inputs(jnp.float32, 1)
    loss = lambda f: lambda *a: jnp.sum(jnp.sin(f(*a)))  # noqa: E731
    fused = lambda *a: depthwise.forward(*a, stride=1, padding=1)  # noqa: E731
    reference = lambda *a: depthwise.shifted_sum(*a, 1, 1)  # noqa: E731
    got = jax.jit(jax.grad(loss(fused), argnums=(0, 1, 2, 3)))(x, kernel, bias, residual)
    want = jax.grad(loss(reference), argnums=(0, 1, 2, 3))(x, kernel, bias, residual)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_sharded_batch_runs_per_device_without_gathering():
    mesh = Mesh(np.array(jax.devices()[:8]), ('data',))
    x, kernel, bias, residual = inputs(jnp.float32, 1, batch=16)
    rows = NamedSharding(mesh, PartitionSpec('data'))
    fn = jax.jit(lambda *a: depthwise.forward(*a, stride=1, padding=1))
    args = (jax.device_put(x, rows), kernel, bias, jax.device_put(residual, rows))
    text = fn.lower(*args).compile().as_text()
    assert 'gsvit_onednn_depthwise_residual' in text and 'all-gather' not in text
    out = fn(*args)
    assert out.sharding.spec[0] == 'data'
    np.testing.assert_allclose(out, depthwise.shifted_sum(x, kernel, bias, residual, 1, 1),
                               rtol=1e-5, atol=1e-5)
