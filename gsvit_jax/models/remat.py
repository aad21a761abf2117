"""Recompute a block's activations in the backward pass, in a form XLA cannot undo.

`nn.remat` marks the recomputation with optimization barriers, but XLA:CPU drops them before a later
CSE pass, which merges the recomputed ops back into the forward pass: nothing is saved. Here the
block is a `jax.custom_vjp` whose backward pass re-runs it on an input tied to the incoming cotangent
(x + 0 * g[0]), so the recomputation can neither be merged with the forward pass nor scheduled
before the cotangent exists. Only the block's input and variables are kept between the passes.

No Flax lifting is involved: the block is applied functionally to its variables, read from the
parent's scope, and its BatchNorm statistics are written back there. So a block may also be a
grouping of the parent's own layers (`shared=True`): the variable names stay those of the parent.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Variables = dict[str, Any]


def _tie(x: jnp.ndarray, cotangent: jnp.ndarray) -> jnp.ndarray:
    """x, made to depend on `cotangent` without changing its value (for a finite cotangent)."""
    return x + (jnp.ravel(cotangent)[0] * 0).astype(x.dtype)


def _checkpointed(block: nn.Module, train: bool) -> Callable:
    """(params, stats, x) -> (y, new stats); the backward pass recomputes the forward one."""

    def run(params: Variables, stats: Variables, x: jnp.ndarray):
        y, updates = block.apply({'params': params, 'batch_stats': stats}, x, train,
                                 mutable=['batch_stats'])
        return y, updates.get('batch_stats', {})

    @jax.custom_vjp
    def apply(params, stats, x):
        return run(params, stats, x)

    def forward(params, stats, x):
        return run(params, stats, x), (params, stats, x)

    def backward(residuals, cotangents):
        params, stats, x = residuals
        g, _ = cotangents  # the statistics are not differentiated
        _, vjp = jax.vjp(lambda p, x: run(p, stats, x)[0], params, _tie(x, g))
        params_t, x_t = vjp(g)
        return params_t, jax.tree_util.tree_map(lambda _: None, stats), x_t

    apply.defvjp(forward, backward)
    return apply


def call_block(parent: nn.Module, block: nn.Module, x: jnp.ndarray, train: bool, *,
               shared: bool = False, remat: bool = False) -> jnp.ndarray:
    """`block(x, train)` called from `parent`'s compact method; with `remat`, its activations are
    recomputed in the backward pass.

    `block` is unbound. Its variables live in `parent` under `block.name`, or, with `shared=True`,
    directly in `parent` (the block only groups some of the parent's layers, named as the parent
    names them). While `parent` is initialising, or without `remat`, the block runs plainly.
    """
    if parent.is_initializing() or not remat:
        bound = block.clone(parent=parent, name=block.name)
        if shared:
            nn.share_scope(parent, bound)
        return bound(x, train)
    if shared:  # which of the parent's variables are the block's: trace its init for the names
        declared = jax.eval_shape(lambda: block.init(jax.random.key(0), x, train))

    def owned(collection: str) -> Variables:
        where = parent.variables.get(collection, {})
        if not shared:
            return where.get(block.name, {})
        return {name: where[name] for name in declared.get(collection, {})}

    y, stats = _checkpointed(block, train)(owned('params'), owned('batch_stats'), x)
    if train and stats:  # write the updated statistics back where the block's variables live
        for name, value in (stats if shared else {block.name: stats}).items():
            parent.put_variable('batch_stats', name, value)
    return y
