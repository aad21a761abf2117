"""Factored weight gradients (`matmul.WeightGrad`, `train.weight_grads`): the fused Adam forms
x^T dy inside its update with the numbers of the formed gradient, the pre-training step keeps the
decoder's linear layer factored (no (K, N) gradient among its buffers) and trains as before."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gsvit_jax.kernels import adam, matmul, onednn
from gsvit_jax.models.efficientvit import OUTPUT_PROBES, Linear
from gsvit_jax.models.decoder import gsvit_autoencoder
from gsvit_jax.models.random_init import random_variables
from gsvit_jax.train import pretrain_step, weight_grads
from gsvit_jax.train.optimizers import make_optimizer, optimizer_config
from gsvit_jax.train.state import create_train_state

SCHEDULE = optax.linear_schedule(1e-3, 1e-5, 10)


def factors(seed, rows=5, k=64, n=48):
    rng = np.random.default_rng(seed)
    return matmul.WeightGrad(jnp.asarray(rng.normal(size=(rows, k)).astype(np.float32)),
                             jnp.asarray(rng.normal(size=(rows, n)).astype(np.float32)))


@pytest.fixture
def kernels(monkeypatch):
    if not onednn.available():
        pytest.skip('kernels unavailable here (test_onednn checks where they must build)')
    monkeypatch.setattr(onednn, 'CONV_IMPL', 'onednn')


def test_adam_on_factors_equals_adam_on_the_formed_gradient(kernels):
    tx = adam.adam(SCHEDULE)
    rng = np.random.default_rng(0)
    params = {'w': jnp.asarray(rng.normal(size=(64, 1100)).astype(np.float32)),  # 3 column blocks
              'b': jnp.asarray(rng.normal(size=(1100,)).astype(np.float32))}
    fused = jax.jit(tx.fused_step)
    got_params, got_state = params, tx.init(params)
    want_params, want_state = params, tx.init(params)
    assert 'gsvit_fused_adam_outer' in fused.lower(
        {'w': factors(0, n=1100), 'b': params['b']}, got_state, params).as_text()
    for step in range(4):
        g = factors(step + 1, n=1100)
        grads = {'w': g, 'b': jnp.sum(g.dy, axis=0)}
        got_params, got_state = fused(grads, got_state, got_params)
        want_params, want_state = fused({'w': g.x.T @ g.dy, 'b': grads['b']}, want_state,
                                        want_params)
    for got, want in zip(jax.tree.leaves((got_params, got_state)),
                         jax.tree.leaves((want_params, want_state))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert float(jnp.abs(got_params['w'] - params['w']).max()) > 1e-3


def test_optax_path_forms_factors(monkeypatch):
    monkeypatch.setattr(onednn, 'CONV_IMPL', 'xla')
    tx = adam.adam(SCHEDULE)
    params = {'w': jnp.zeros((64, 48))}
    g = factors(1)
    got, _ = jax.jit(tx.fused_step)({'w': g}, tx.init(params), params)
    want, _ = tx.fused_step({'w': g.x.T @ g.dy}, tx.init(params), params)
    np.testing.assert_allclose(got['w'], want['w'], rtol=1e-6, atol=1e-7)


def test_norm_and_value_of_factors():
    g = factors(2)
    formed = np.asarray(g.x, np.float64).T @ np.asarray(g.dy, np.float64)
    np.testing.assert_allclose(g.value(), formed, rtol=1e-5, atol=1e-5)
    other = jnp.arange(6.0)
    np.testing.assert_allclose(weight_grads.global_norm({'w': g, 'o': other}),
                               np.sqrt(np.sum(formed ** 2) + 55.0), rtol=1e-5)


def test_worth_deferring():
    assert matmul.worth_deferring(8, 6144, 50176)  # the decoder at batch 8
    assert not matmul.worth_deferring(12544, 192, 384)  # an encoder 1x1 conv at batch 64


def test_linear_without_probes_has_its_kernel_gradient():
    layer = Linear(3)
    x = jnp.ones((2, 4))
    variables = layer.init(jax.random.key(0), x)
    grads = jax.grad(lambda v: jnp.sum(layer.apply(v, x) ** 2))(variables)
    assert float(jnp.abs(grads['params']['kernel']).max()) > 0
    # with a probe the kernel's gradient is left to the probe's owner
    probed = {**variables, OUTPUT_PROBES: {'y': jnp.zeros((2, 3))}}
    grads = jax.grad(lambda v: jnp.sum(layer.apply(v, x) ** 2))(probed)
    assert float(jnp.abs(grads['params']['kernel']).max()) == 0
    np.testing.assert_allclose(grads[OUTPUT_PROBES]['y'], 2 * layer.apply(variables, x))


@pytest.fixture(scope='module')
def tiny_step():
    model = gsvit_autoencoder('tiny', img_size=64, widths=(64, 48, 48, 32, 16))
    tx, schedule = make_optimizer(optimizer_config(), 10)
    variables = random_variables(model, 64)
    assert set(variables) == {'params', 'batch_stats'}  # init stores no layer inputs
    state = create_train_state(variables, tx, 0)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 4, 64, 64, 3), dtype=np.uint8)
    return model, tx, schedule, state, {'frame': frames[0], 'next_frame': frames[1]}


def test_train_step_keeps_the_decoder_layer_factored(kernels, tiny_step, monkeypatch):
    model, tx, schedule, state, batch = tiny_step
    kernel = state.params['decoder']['fc']['kernel']
    assert matmul.worth_deferring(4, *kernel.shape)
    monkeypatch.setattr(matmul, 'MIN_FLOAT32_MACS', 0)  # products through oneDNN, as at full size
    # an op (not a parameter, copy or tuple element) whose result is a (K, N) float32 array
    computed = re.compile(r'= f32\[%d,%d\]\{1,0\} (dot|fusion|custom-call)\(' % kernel.shape)
    factored = jax.jit(pretrain_step.make_train_step(model, tx, schedule))
    program = factored.lower(state, batch).compile().as_text()
    assert 'gsvit_fused_adam_outer' in program and not computed.search(program)
    monkeypatch.setattr(pretrain_step, 'takes_weight_grad_factors', lambda tx, params: False)
    formed = jax.jit(pretrain_step.make_train_step(model, tx, schedule))
    program = formed.lower(state, batch).compile().as_text()
    assert 'gsvit_fused_adam_outer' not in program and computed.search(program)  # the gradient
    a, b = state, state
    for _ in range(3):
        a, ma = factored(a, batch)
        b, mb = formed(b, batch)
        assert float(ma['finite']) == 1
        np.testing.assert_allclose(ma['loss'], mb['loss'], rtol=1e-5)
        np.testing.assert_allclose(ma['grad_norm'], mb['grad_norm'], rtol=1e-4)
    assert float(mb['loss']) < float(jax.device_get(formed(state, batch)[1]['loss']))
    for got, want in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)
