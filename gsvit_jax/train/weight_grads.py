"""Gradients in which large linear layers' weight gradients stay factored (`matmul.WeightGrad`).

The pre-training decoder's 6144 x 50176 layer has a 1.2 GB weight gradient at any batch size,
computed from an 8 x 6144 input and an 8 x 50176 output gradient at batch 8. An optimizer that
forms it inside its update (the fused Adam on the CPU) needs only those factors; the train step
asks the model for them through the `Linear` layers' probe collections (`models.efficientvit`).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import traverse_util

from gsvit_jax.kernels.matmul import WeightGrad, worth_deferring
from gsvit_jax.models.efficientvit import LINEAR_INPUTS


def output_probes(apply_fn: Callable, variables: dict, *args, mutable: Sequence[str] = (),
                  **kwargs) -> dict:
    """Zero probes, a collection for `OUTPUT_PROBES`, for the outputs of the `Linear` layers that
    `apply_fn(variables, *args, **kwargs)` runs and whose weight gradients are worth keeping as
    factors (`worth_deferring`); {} if none. Traces the model once more (shapes only)."""
    _, sown = jax.eval_shape(functools.partial(apply_fn, variables, *args,
                                               mutable=[*mutable, LINEAR_INPUTS], **kwargs))
    kernels = traverse_util.flatten_dict(variables['params'])
    probes = {}
    for path, x in traverse_util.flatten_dict(sown.get(LINEAR_INPUTS, {})).items():
        k, n = kernels[(*path[:-1], 'kernel')].shape
        if worth_deferring(math.prod(x.shape[:-1]), k, n):
            probes[(*path[:-1], 'y')] = jnp.zeros((*x.shape[:-1], n), x.dtype)
    return traverse_util.unflatten_dict(probes)


def factored(grads: Any, inputs: dict, probe_grads: dict) -> Any:
    """`grads` (whose probed kernels got no gradient) with each probed layer's kernel gradient
    as `WeightGrad(input rows, output-gradient rows)`."""
    inputs = traverse_util.flatten_dict(inputs)
    replace = {}
    for path, dy in traverse_util.flatten_dict(probe_grads).items():
        x = inputs[(*path[:-1], 'x')]
        replace[(*path[:-1], 'kernel')] = WeightGrad(x.reshape(-1, x.shape[-1]),
                                                     dy.reshape(-1, dy.shape[-1]))
    return jax.tree_util.tree_map_with_path(
        lambda path, g: replace.get(tuple(key.key for key in path), g), grads)


def global_norm(grads: Any) -> jnp.ndarray:
    """`optax.tree.norm(grads)`, with factored leaves' norms taken without forming them."""
    leaves = jax.tree.leaves(grads, is_leaf=lambda g: isinstance(g, WeightGrad))
    return jnp.sqrt(sum(g.squared_norm() if isinstance(g, WeightGrad)
                        else jnp.sum(jnp.square(g.astype(jnp.float32))) for g in leaves))
