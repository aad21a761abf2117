"""Phase heads: the paper's MLP sizes, and the causal TCN's causality and online stepping."""
import jax
import jax.numpy as jnp
import numpy as np

from gsvit_jax.models.phase_head import PhaseHead
from gsvit_jax.models.temporal import CausalTCN


def count(tree) -> int:
    return sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(tree))


def test_paper_head_parameter_counts():
    head = PhaseHead()
    flat = head.init(jax.random.key(0), jnp.zeros((1, 6144)))
    pooled = head.init(jax.random.key(0), jnp.zeros((1, 384)))
    # 6144*2048+2048 + 2*2048 + 2048*512+512 + 2*512 + 512*7+7 (the paper's "13.7M")
    assert count(flat) == 13_642_759
    assert count(pooled) == 1_846_279
    shapes = {k: v['kernel'].shape for k, v in flat['params'].items() if 'kernel' in v}
    assert shapes == {'fc1': (6144, 2048), 'fc2': (2048, 512), 'fc3': (512, 7)}


def test_head_dropout_only_in_training():
    head = PhaseHead()
    x = jax.random.normal(jax.random.key(1), (4, 384))
    variables = head.init(jax.random.key(0), x)
    a = head.apply(variables, x, train=True, rngs={'dropout': jax.random.key(2)})
    b = head.apply(variables, x, train=True, rngs={'dropout': jax.random.key(3)})
    assert a.shape == (4, 7) and float(jnp.abs(a - b).max()) > 1e-3
    np.testing.assert_array_equal(head.apply(variables, x), head.apply(variables, x))


def test_tcn_is_causal_and_stepping_equals_the_full_sequence():
    model = CausalTCN(features=16, num_layers=4, num_stages=2)
    x = jax.random.normal(jax.random.key(0), (2, 50, 12))
    variables = model.init(jax.random.key(1), x)
    full = model.apply(variables, x)
    assert full.shape == (2, 2, 50, 7)
    changed = model.apply(variables, x.at[:, 30:].set(3.0))
    # the past never sees the future
    np.testing.assert_array_equal(changed[:, :, :30], full[:, :, :30])
    assert float(jnp.abs(changed[:, :, 30:] - full[:, :, 30:]).max()) > 1e-3

    step = jax.jit(lambda v, x, h: model.apply(v, x, h, method=CausalTCN.step))
    histories, outputs = model.initial_histories(2), []
    for t in range(50):
        logits, histories = step(variables, x[:, t], histories)
        outputs.append(logits)
    np.testing.assert_allclose(np.stack(outputs, 1), full[-1], atol=1e-5)


def test_tcn_receptive_field():
    model = CausalTCN(features=8, num_layers=3, num_stages=2)
    assert model.receptive_field == 2 * 2 * (2 ** 3 - 1) + 1  # 29 steps
    x = jnp.zeros((1, 60, 4))
    variables = model.init(jax.random.key(0), x)
    base = model.apply(variables, x)[-1, 0]
    moved = model.apply(variables, x.at[0, 10].set(5.0))[-1, 0]
    changed = np.flatnonzero(np.abs(np.asarray(moved - base)).max(-1) > 0)
    assert changed.min() == 10 and changed.max() <= 10 + model.receptive_field - 1
