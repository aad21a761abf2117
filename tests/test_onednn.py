"""oneDNN convolution kernel (gsvit_jax.kernels.onednn): the same numbers as XLA's convolution,
forward and backward, sharded over devices without gathering the batch, and a clean fallback."""
import os
import platform
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gsvit_jax.errors import UserError
from gsvit_jax.kernels import onednn

# (batch, size, in channels, out channels, kernel, stride, padding): the patch embedding's
# stride-2 3x3 convs, an odd size, a 1x1 and an unpadded stride-1 conv.
SHAPES = [(3, 32, 3, 24, 3, 2, 1), (2, 17, 24, 48, 3, 2, 1), (2, 9, 16, 8, 1, 1, 0),
          (1, 12, 8, 16, 3, 1, 0)]


def inputs(b, size, cin, cout, k, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(b, size, size, cin)).astype(np.float32)
    kernel = (rng.normal(size=(k, k, cin, cout)) / np.sqrt(k * k * cin)).astype(np.float32)
    bias = rng.normal(size=(cout,)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(kernel), jnp.asarray(bias)


@pytest.fixture
def impl(monkeypatch):
    """Set `CONV_IMPL` for the test (restored afterwards)."""
    return lambda name: monkeypatch.setattr(onednn, 'CONV_IMPL', name)


def test_builds_on_x86_64_linux():
    if sys.platform != 'linux' or platform.machine() != 'x86_64':
        pytest.skip('the onednn-cpu-gomp dependency is for x86-64 Linux')
    assert onednn.available()  # the package's default on CPU: a broken build must fail here
    assert onednn.use_onednn()


@pytest.mark.parametrize('shape', SHAPES)
def test_forward_matches_xla(shape, impl):
    b, size, cin, cout, k, stride, pad = shape
    x, kernel, bias = inputs(b, size, cin, cout, k)
    impl('onednn')
    fn = jax.jit(lambda x, k, b: onednn.conv2d(x, k, b, stride=stride, padding=pad))
    assert 'gsvit_onednn_conv' in fn.lower(x, kernel, bias).as_text()
    got = fn(x, kernel, bias)
    want = onednn.xla_conv2d(x, kernel, bias, stride, pad)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    no_bias = jax.jit(lambda x, k: onednn.conv2d(x, k, stride=stride, padding=pad))(x, kernel)
    np.testing.assert_allclose(no_bias, want - bias, rtol=1e-5, atol=1e-5)


def test_bfloat16_matches_float32_within_bfloat16_rounding(impl):
    x, kernel, bias = inputs(2, 28, 24, 48, 3)
    impl('onednn')
    got = jax.jit(lambda x, k, b: onednn.conv2d(x, k, b, stride=2, padding=1))(
        x.astype(jnp.bfloat16), kernel, bias)
    assert got.dtype == jnp.bfloat16
    want = onednn.xla_conv2d(x, kernel, bias, 2, 1)
    scale = float(jnp.abs(want).max())
    err = float(jnp.abs(got.astype(jnp.float32) - want).max())
    assert err < 2e-2 * scale, (err, scale)  # bf16 inputs (8-bit mantissa), f32 accumulation


def test_gradients_match_xla(impl):
    x, kernel, bias = inputs(2, 16, 8, 12, 3)
    target = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8, 8, 12)).astype(np.float32))

    def loss(conv):
        return lambda x, k, b: jnp.sum((conv(x, k, b) - target) ** 2)

    impl('onednn')
    got = jax.jit(jax.grad(loss(lambda x, k, b: onednn.conv2d(x, k, b, stride=2, padding=1)),
                           argnums=(0, 1, 2)))(x, kernel, bias)
    want = jax.grad(loss(lambda x, k, b: onednn.xla_conv2d(x, k, b, 2, 1)),
                    argnums=(0, 1, 2))(x, kernel, bias)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_fused_relu_forward_and_gradients_match_xla(impl):
    """The patch embedding's ReLU runs inside the convolution (a oneDNN post-op); its gradient
    is masked by the output."""
    x, kernel, bias = inputs(2, 16, 8, 12, 3)

    def loss(conv):
        return lambda x, k, b: jnp.sum(jnp.sin(conv(x, k, b)))

    impl('onednn')
    fn = lambda x, k, b: onednn.conv2d(x, k, b, stride=2, padding=1, relu=True)  # noqa: E731
    out = jax.jit(fn)(x, kernel, bias)
    want = onednn.xla_conv2d(x, kernel, bias, 2, 1, relu=True)
    assert 0.2 < float(jnp.mean(out == 0)) < 0.8  # the ReLU is exercised
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    got = jax.jit(jax.grad(loss(fn), argnums=(0, 1, 2)))(x, kernel, bias)
    ref = jax.grad(loss(lambda x, k, b: onednn.xla_conv2d(x, k, b, 2, 1, relu=True)),
                   argnums=(0, 1, 2))(x, kernel, bias)
    for g, w in zip(got, ref):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_sharded_batch_runs_per_device_without_gathering(impl):
    mesh = Mesh(np.array(jax.devices()[:8]), ('data',))
    x, kernel, bias = inputs(16, 16, 8, 12, 3)
    impl('onednn')
    fn = jax.jit(lambda x, k, b: onednn.conv2d(x, k, b, stride=2, padding=1))
    sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec('data')))
    compiled = fn.lower(sharded, kernel, bias).compile()
    text = compiled.as_text()
    assert 'gsvit_onednn_conv' in text and 'all-gather' not in text
    out = compiled(sharded, kernel, bias)
    assert out.sharding.spec[0] == 'data'
    assert out.addressable_shards[0].data.shape == (2, 8, 8, 12)  # 16 rows over 8 devices
    np.testing.assert_allclose(out, onednn.xla_conv2d(x, kernel, bias, 2, 1), rtol=1e-5, atol=1e-5)


def test_small_calls_run_on_one_thread(impl, monkeypatch):
    """A call of fewer than ONE_THREAD_MACS multiply-adds gets one thread (batch 1), a larger one
    the cores' share per device (16 cores, 2 devices: 8)."""
    monkeypatch.setattr(onednn.os, 'sched_getaffinity', lambda pid: set(range(16)))
    monkeypatch.setattr(onednn.jax, 'local_device_count', lambda: 2)
    assert onednn.threads() == onednn.threads(onednn.ONE_THREAD_MACS) == 8
    assert onednn.threads(onednn.ONE_THREAD_MACS - 1) == 1
    impl('onednn')
    fn = jax.jit(lambda x, k: onednn.conv2d(x, k, stride=2, padding=1))
    kernel = jax.ShapeDtypeStruct((3, 3, 48, 96), jnp.float32)
    for batch, threads in ((1, 1), (64, 8)):  # 28 x 28 x 96 x 432 = 32.5M multiply-adds per image
        text = fn.lower(jax.ShapeDtypeStruct((batch, 56, 56, 48), jnp.float32), kernel).as_text()
        assert f'threads = {threads} : i64' in text


def test_sharded_gradients_sum_over_devices(impl):
    """Batch rows on 8 devices: each computes its rows' gradients, the kernel and bias gradients
    are summed across devices (no activation is gathered), equal to one device's."""
    mesh = Mesh(np.array(jax.devices()[:8]), ('data',))
    x, kernel, bias = inputs(16, 16, 8, 12, 3)
    impl('onednn')
    grad = jax.jit(jax.grad(lambda x, k, b: jnp.sum(
        onednn.conv2d(x, k, b, stride=2, padding=1) ** 2), argnums=(0, 1, 2)))
    want = grad(x, kernel, bias)
    sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec('data')))
    text = grad.lower(sharded, kernel, bias).compile().as_text()
    assert 'gsvit_onednn_conv_backward_weights' in text and 'all-gather' not in text
    got = grad(sharded, kernel, bias)
    assert got[0].sharding.spec[0] == 'data'
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)


def test_bfloat16_gradients_are_float32_for_the_parameters(impl):
    x, kernel, bias = inputs(2, 16, 8, 12, 3)
    impl('onednn')
    loss = lambda conv: lambda x, k, b: jnp.sum(conv(x.astype(jnp.bfloat16), k, b)  # noqa: E731
                                                .astype(jnp.float32) ** 2)
    got = jax.jit(jax.grad(loss(lambda x, k, b: onednn.conv2d(x, k, b, stride=1, padding=1)),
                           argnums=(0, 1, 2)))(x, kernel, bias)
    # reference: float32 arithmetic on the bf16-rounded input and kernel (XLA's own bf16 conv
    # sums the bias gradient in bf16, 10% off here; oneDNN accumulates in float32)
    rounded = lambda a: a.astype(jnp.bfloat16).astype(jnp.float32)  # noqa: E731
    want = jax.grad(lambda x, k, b: jnp.sum(onednn.xla_conv2d(rounded(x), rounded(k), b, 1, 1) ** 2),
                    argnums=(0, 1, 2))(x, kernel, bias)
    assert [g.dtype for g in got] == [jnp.float32] * 3
    for g, w in zip(got, want):  # bf16 output gradient: within ~1% of the scale
        assert float(jnp.abs(g - w).max()) < 2e-2 * float(jnp.abs(w).max())


def test_xla_choice_calls_no_kernel(impl):
    x, kernel, bias = inputs(1, 8, 3, 4, 3)
    impl('xla')
    text = jax.jit(lambda x: onednn.conv2d(x, kernel, bias, stride=2, padding=1)).lower(x).as_text()
    assert 'gsvit_onednn_conv' not in text and 'convolution' in text


def test_unknown_choice_is_a_user_error(impl):
    impl('fast')
    with pytest.raises(UserError, match="must be auto, xla or onednn, got 'fast'"):
        onednn.use_onednn()


@pytest.mark.parametrize('env, message', [
    ({'GSVIT_ONEDNN': '0'}, None),
    ({'CXX': '/nonexistent/c++', 'GSVIT_JAX_CACHE': 'EMPTY'}, 'oneDNN kernels unavailable'),
])
def test_falls_back_to_xla(env, message, tmp_path):
    """Switched off, or without a compiler (and nothing built yet): XLA's conv, same numbers."""
    env = {k: str(tmp_path) if v == 'EMPTY' else v for k, v in env.items()}
    code = ('import jax, jax.numpy as jnp\n'
            'from gsvit_jax.kernels import onednn\n'
            'x = jnp.ones((1, 8, 8, 3)); k = jnp.ones((3, 3, 3, 4))\n'
            'f = jax.jit(lambda x: onednn.conv2d(x, k, stride=2, padding=1))\n'
            'print(onednn.available(), "gsvit_onednn_conv" in f.lower(x).as_text(), '
            'float(f(x).sum()))\n')
    run = subprocess.run([sys.executable, '-c', code], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    # all ones: (2 + 3 + 3 + 3) ** 2 taps inside the padding x 3 in x 4 out channels = 1452
    assert run.stdout.split() == ['False', 'False', '1452.0']
    if message:
        assert message in run.stderr and 'Traceback' not in run.stderr
