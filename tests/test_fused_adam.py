"""Adam's one-pass update (gsvit_jax.kernels.adam): optax.adam's numbers and state, in the train
steps by default, replicated over a device mesh, and optax's own arithmetic where it is off."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gsvit_jax.kernels import adam, onednn
from gsvit_jax.train.optimizers import apply_optimizer, make_optimizer, optimizer_config

SCHEDULE = optax.linear_schedule(1e-3, 1e-5, 10)


def tree(seed):
    rng = np.random.default_rng(seed)
    return {'w': jnp.asarray(rng.normal(size=(64, 48)).astype(np.float32)),
            'b': jnp.asarray(rng.normal(size=(7,)).astype(np.float32))}


def optax_step(grads, opt_state, params):
    updates, opt_state = optax.adam(SCHEDULE).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


@pytest.fixture
def impl(monkeypatch):
    return lambda name: monkeypatch.setattr(onednn, 'CONV_IMPL', name)


def test_same_numbers_and_state_as_optax(impl):
    if not onednn.available():
        pytest.skip('kernels unavailable here (test_onednn checks where they must build)')
    impl('onednn')
    tx = adam.adam(SCHEDULE)
    fused = jax.jit(tx.fused_step)
    params = tree(0)
    assert 'gsvit_fused_adam' in fused.lower(params, tx.init(params), params).as_text()
    state = tx.init(params)
    assert (jax.tree_util.tree_structure(state)
            == jax.tree_util.tree_structure(optax.adam(SCHEDULE).init(params)))  # checkpoints
    want_params, want_state = params, state
    for step in range(6):
        grads = tree(step + 1)
        params, state = fused(grads, state, params)
        want_params, want_state = jax.jit(optax_step)(grads, want_state, want_params)
    assert int(state[0].count) == int(state[1].count) == 6
    for got, want in zip(jax.tree.leaves((params, state)), jax.tree.leaves((want_params,
                                                                             want_state))):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert float(jnp.abs(params['w'] - tree(0)['w']).max()) > 1e-3  # the parameters moved


def test_replicated_over_a_mesh(impl):
    if not onednn.available():
        pytest.skip('kernels unavailable here')
    impl('onednn')
    mesh = Mesh(np.array(jax.devices()[:8]), ('data',))
    replicated = NamedSharding(mesh, PartitionSpec())
    tx = adam.adam(SCHEDULE)
    params = jax.device_put(tree(0), replicated)
    state = jax.device_put(tx.init(params), replicated)
    got, _ = jax.jit(tx.fused_step)(tree(1), state, params)
    want, _ = optax_step(tree(1), optax.adam(SCHEDULE).init(tree(0)), tree(0))
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)


def test_optax_arithmetic_where_kernels_are_off(impl):
    impl('xla')
    tx, _ = make_optimizer(optimizer_config(), 10)
    params = tree(0)
    step = jax.jit(lambda g, s, p: apply_optimizer(tx, g, s, p))
    assert 'gsvit_fused_adam' not in step.lower(params, tx.init(params), params).as_text()
    got, _ = step(tree(1), tx.init(params), params)
    want, _ = optax_step(tree(1), optax.adam(SCHEDULE).init(params), params)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):  # one compiled program's
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)  # rounding vs another's


def test_default_optimizer_is_fused_and_clipping_or_adamw_are_optax():
    assert hasattr(make_optimizer(optimizer_config(), 10)[0], 'fused_step')
    assert not hasattr(make_optimizer(optimizer_config(grad_clip=1.0), 10)[0], 'fused_step')
    assert not hasattr(make_optimizer(optimizer_config(name='adamw'), 10)[0], 'fused_step')
