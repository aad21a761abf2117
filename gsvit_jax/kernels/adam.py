"""optax.adam's update in one pass per parameter on XLA:CPU (`fused_adam.cc`).

XLA:CPU runs the update as three loops over each parameter (first moment, second moment, the
parameter), reading and writing 10 parameter-sized arrays where one pass needs 7: 0.37 s of the
pre-training step at batch 8, twice PyTorch's fused Adam (benchmarks/RESULTS.md). `adam` is
`optax.adam` (same state, so checkpoints do not change) plus `fused_step`, which the train steps
use for update + apply: the kernel on the CPU backend where it builds (`onednn.use_onednn()`),
optax's own arithmetic elsewhere.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gsvit_jax.kernels import onednn


class FusedAdam(NamedTuple):
    """An optax GradientTransformation (init, update) with `fused_step(grads, opt_state, params)
    -> (params, opt_state)`: update and apply in one."""

    init: Callable
    update: Callable
    fused_step: Callable


def _leaf_update(p, g, m, v, hyper, b1: float, b2: float, eps: float):
    out = [jax.ShapeDtypeStruct(p.shape, jnp.float32)] * 3
    return jax.ffi.ffi_call(onednn.HANDLERS['adam'][0], out, vmap_method='sequential',
                            input_output_aliases={0: 0, 2: 1, 3: 2})(
        p, g, m, v, hyper, b1=np.float32(b1), one_minus_b1=np.float32(1 - b1), b2=np.float32(b2),
        one_minus_b2=np.float32(1 - b2), eps=np.float32(eps), threads=onednn.threads())


def adam(learning_rate: optax.Schedule, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-8) -> FusedAdam:
    """`optax.adam(learning_rate, b1, b2, eps)` whose `fused_step` runs the fused kernel."""
    tx = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)

    def fused_step(grads: Any, opt_state: Any, params: Any) -> tuple[Any, Any]:
        if not (onednn.use_onednn() and all(x.dtype == jnp.float32
                                             for x in jax.tree_util.tree_leaves(params))):
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state
        adam_state, schedule_state = opt_state
        count = optax.safe_increment(adam_state.count)
        hyper = jnp.stack([-learning_rate(schedule_state.count), 1 - b1 ** count,
                           1 - b2 ** count]).astype(jnp.float32)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        updated = [_leaf_update(*leaf, hyper, b1, b2, eps) for leaf in zip(
            leaves, *(treedef.flatten_up_to(t) for t in (grads, adam_state.mu, adam_state.nu)))]
        new_params, mu, nu = (treedef.unflatten(list(part)) for part in zip(*updated))
        return new_params, (adam_state._replace(count=count, mu=mu, nu=nu),
                            schedule_state._replace(count=optax.safe_increment(
                                schedule_state.count)))

    return FusedAdam(tx.init, tx.update, fused_step)
