"""Recomputation in the backward pass (`remat`): same loss, gradients and statistics, less memory."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gsvit_jax.models.decoder import gsvit_autoencoder
from gsvit_jax.models.random_init import random_variables

WIDTHS = (64, 48, 48, 32, 16)


def compiled_step(remat: bool, x: np.ndarray):
    """(variables, compiled (params, stats, x) -> ((loss, new stats), grads), XLA's temporaries)."""
    model = gsvit_autoencoder('tiny', img_size=64, widths=WIDTHS, remat=remat)
    variables = random_variables(model, 64)

    def loss(params, stats, x):
        out, updates = model.apply({'params': params, 'batch_stats': stats}, x, train=True,
                                   mutable=['batch_stats'])
        return jnp.mean(jnp.abs(out - 0.5)), updates['batch_stats']

    compiled = jax.jit(jax.value_and_grad(loss, has_aux=True)).lower(
        variables['params'], variables['batch_stats'], x).compile()
    return variables, compiled, compiled.memory_analysis().temp_size_in_bytes


@pytest.fixture
def grouped_depthwise(monkeypatch):
    """The program a GPU runs (grouped depthwise convs); also compiles 3x faster on CPU."""
    module = importlib.import_module('gsvit_jax.models.efficientvit')
    monkeypatch.setattr(module, 'DEPTHWISE_IMPL', 'grouped')


def test_remat_gives_the_same_step_with_less_memory(grouped_depthwise):
    """Encoder blocks, decoder upsampling stages and residual blocks recomputed: the same loss,
    gradients and BatchNorm statistics (to float32 rounding), and XLA keeps well under two thirds of the
    temporaries (a remat that XLA merged back into the forward pass would save nothing)."""
    x = np.random.default_rng(1).uniform(size=(32, 64, 64, 3)).astype(np.float32)
    results, temporaries = [], []
    for remat in (False, True):
        variables, compiled, temp = compiled_step(remat, x)
        results.append(compiled(variables['params'], variables['batch_stats'], x))
        temporaries.append(temp)
    ((l0, stats0), g0), ((l1, stats1), g1) = results
    assert jax.tree_util.tree_structure(g0) == jax.tree_util.tree_structure(g1)
    assert jax.tree_util.tree_structure(stats0) == jax.tree_util.tree_structure(stats1)
    assert abs(float(l0) - float(l1)) <= 1e-7
    for tree0, tree1 in ((g0, g1), (stats0, stats1)):
        leaves0, leaves1 = jax.tree_util.tree_leaves(tree0), jax.tree_util.tree_leaves(tree1)
        floor = 1e-4 * max(np.abs(a).max() for a in leaves0)
        for a, b in zip(leaves0, leaves1):
            # the same arithmetic summed in another order: float32 rounding, amplified a little
            # by BatchNorm (conv biases before a BatchNorm have a true gradient of 0: only noise)
            assert np.abs(a - b).max() <= 1e-3 * np.abs(a).max() + floor
    assert temporaries[1] < 0.65 * temporaries[0], temporaries


def test_remat_keeps_the_variable_names():
    """The recomputed groups are not new scopes: `decoder/conv4`, not `decoder/up4/conv4`."""
    x = np.zeros((1, 64, 64, 3), np.float32)
    shapes = [jax.eval_shape(gsvit_autoencoder('m0', img_size=64, widths=WIDTHS, remat=remat).init,
                             jax.random.key(0), x) for remat in (False, True)]
    assert jax.tree_util.tree_structure(shapes[0]) == jax.tree_util.tree_structure(shapes[1])
    assert {'conv4', 'bn4', 'res2'} <= set(shapes[1]['params']['decoder'])
    assert {'patch_embed', 'blocks1'} <= set(shapes[1]['params']['evit'])
