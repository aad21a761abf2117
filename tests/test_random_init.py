"""The initialisation key (`random_init.INIT_KEY`): well-spread bits, independent streams, the
model's initialisers honoured, and a small init program."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gsvit_jax.convert import abstract_variables
from gsvit_jax.models import efficientvit
from gsvit_jax.models.random_init import INIT_KEY, jitted_init, random_variables


def key(seed):
    return jax.random.key(seed, impl=INIT_KEY)


def test_bits_are_balanced_and_streams_independent():
    bits = np.asarray(jax.random.bits(key(0), (1 << 20,)))
    per_bit = [(bits >> b & 1).mean() for b in range(32)]
    assert max(abs(p - 0.5) for p in per_bit) < 0.002  # 1M draws: sd 0.0005 per bit
    u = np.asarray(jax.random.uniform(key(0), (1 << 20,)), np.float64)
    assert abs(u.mean() - 0.5) < 0.002 and abs(u.var() - 1 / 12) < 0.001
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.005  # neighbours (counters) unrelated
    n = np.asarray(jax.random.normal(key(0), (1 << 20,)), np.float64)
    assert abs(n.mean()) < 0.005 and abs(n.std() - 1) < 0.005
    streams = [np.asarray(jax.random.uniform(k, (1 << 16,)), np.float64) for k in (
        key(1), key(2), jax.random.fold_in(key(1), 0), jax.random.fold_in(key(1), 1),
        *jax.random.split(key(1), 2))]
    correlation = np.corrcoef(np.stack(streams))
    assert np.abs(correlation - np.eye(len(streams))).max() < 0.03  # 64k draws: sd 0.004


def test_same_seed_same_values_other_seed_other_values():
    model = efficientvit('m0', num_classes=5, img_size=64)  # a model no other test builds
    traces = []

    def on_trace(event, _, **kw):
        if event.endswith('jaxpr_trace_duration'):
            traces.append(kw.get('fun_name'))
    jax.monitoring.register_event_duration_secs_listener(on_trace)
    try:  # one trace of the forward pass serves every seed, the shape query and an equal model
        a, b, c = (random_variables(m, 64, seed) for m, seed in (
            (model, 0), (efficientvit('m0', num_classes=5, img_size=64), 0), (model, 1)))
        shapes = abstract_variables(model, 64)
    finally:
        jax.monitoring.unregister_event_duration_listener(on_trace)
    assert traces.count('init') == 1, traces
    assert jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), shapes) == \
        jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), a)
    for x, y, z in zip(*(jax.tree_util.tree_leaves(v['params']) for v in (a, b, c))):
        np.testing.assert_array_equal(x, y)
        if np.asarray(x).std() > 0:  # random, not a constant such as a BatchNorm weight
            assert not np.array_equal(x, z)


def test_initialisers_are_honoured_and_the_program_is_small():
    """PyTorch's default conv init, U(+-1/sqrt(fan_in)), through the model's own initialisers;
    the init program stays small (with JAX's threefry key it was ~60,000 HLO lines)."""
    model = efficientvit('m0', num_classes=0, img_size=64)
    variables = random_variables(model, 64)
    kernel = np.asarray(variables['params']['blocks3']['5']['ffn0']['m']['pw1']['c']['kernel'])
    bound = 1 / np.sqrt(kernel.shape[2])  # a 1x1 conv: fan_in = input channels
    assert kernel.min() >= -bound and kernel.max() <= bound
    assert abs(kernel.std() - bound / np.sqrt(3)) < 0.02 * bound
    assert np.all(np.asarray(
        variables['batch_stats']['blocks3']['5']['ffn0']['m']['pw1']['bn']['running_var']) == 1)
    program = jax.jit(model.init).lower(key(0), jnp.zeros((1, 64, 64, 3))).compile().as_text()
    assert len(program.splitlines()) < 15_000


class _Listed(nn.Module):
    widths: list  # unhashable: such a module cannot share a jitted init

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.widths[0])(x)


def test_a_model_with_unhashable_fields_still_initialises():
    model = _Listed([3])
    assert jitted_init(model) is not jitted_init(model)
    assert random_variables(model, 4)['params']['Dense_0']['kernel'].shape == (3, 3)
