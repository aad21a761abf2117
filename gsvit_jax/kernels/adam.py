"""optax.adam's update in one pass per parameter on XLA:CPU (`fused_adam.cc`).

XLA:CPU runs the update as three loops over each parameter (first moment, second moment, the
parameter), reading and writing 10 parameter-sized arrays where one pass needs 7: 0.37 s of the
pre-training step at batch 8, twice PyTorch's fused Adam (benchmarks/RESULTS.md). `adam` is
`optax.adam` (same state, so checkpoints do not change) plus `fused_step`, which the train steps
use for update + apply: the kernel on the CPU backend where it builds (`runs_fused`), optax's own
arithmetic elsewhere. A gradient may also arrive as its factors (`matmul.WeightGrad`, a linear
layer's x and dy): the kernel then forms it tile by tile inside the update, never the whole array.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gsvit_jax.kernels import onednn
from gsvit_jax.kernels.matmul import WeightGrad


class FusedAdam(NamedTuple):
    """An optax GradientTransformation (init, update) with `fused_step(grads, opt_state, params)
    -> (params, opt_state)`: update and apply in one."""

    init: Callable
    update: Callable
    fused_step: Callable


def runs_fused(params: Any) -> bool:
    """Whether `fused_step` runs the kernel for these parameters (float32, kernels on)."""
    return onednn.use_onednn() and all(x.dtype == jnp.float32
                                       for x in jax.tree_util.tree_leaves(params))


def _leaf_update(p, g, m, v, hyper, b1: float, b2: float, eps: float):
    out = [jax.ShapeDtypeStruct(p.shape, jnp.float32)] * 3
    attrs = dict(b1=np.float32(b1), one_minus_b1=np.float32(1 - b1), b2=np.float32(b2),
                 one_minus_b2=np.float32(1 - b2), eps=np.float32(eps), threads=onednn.threads())
    if isinstance(g, WeightGrad):  # p (K, N): x^T (K, M) and dy (M, N) in place of g
        return jax.ffi.ffi_call(onednn.HANDLERS['adam_outer'][0], out, vmap_method='sequential',
                                input_output_aliases={0: 0, 3: 1, 4: 2})(
            p, g.x.astype(jnp.float32).T, g.dy.astype(jnp.float32), m, v, hyper, **attrs)
    return jax.ffi.ffi_call(onednn.HANDLERS['adam'][0], out, vmap_method='sequential',
                            input_output_aliases={0: 0, 2: 1, 3: 2})(p, g, m, v, hyper, **attrs)


def _formed(grads: Any) -> Any:
    """grads with every `WeightGrad` formed into its array."""
    return jax.tree.map(lambda g: g.value() if isinstance(g, WeightGrad) else g, grads,
                        is_leaf=lambda g: isinstance(g, WeightGrad))


def adam(learning_rate: optax.Schedule, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-8) -> FusedAdam:
    """`optax.adam(learning_rate, b1, b2, eps)` whose `fused_step` runs the fused kernel."""
    tx = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)

    def fused_step(grads: Any, opt_state: Any, params: Any) -> tuple[Any, Any]:
        if not runs_fused(params):
            updates, opt_state = tx.update(_formed(grads), opt_state, params)
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
