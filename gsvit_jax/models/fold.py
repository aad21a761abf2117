"""Inference weights: every BatchNorm of a `ConvBN` / `BNLinear` folded into its conv / linear layer
(the `params` of the same model built with `fused=True`: fewer ops and no batch_stats), and their
kernels cast once for a bfloat16 model.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

EPSILON = 1e-5  # PyTorch BatchNorm default, used everywhere in EfficientViT


def _bn_scale_shift(bn: Mapping[str, Any], stats: Mapping[str, Any]) -> tuple[Any, Any]:
    scale = bn['weight'] / jnp.sqrt(stats['running_var'] + EPSILON)
    return scale, bn['bias'] - stats['running_mean'] * scale


def _fold(params: Mapping[str, Any], stats: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, node in params.items():
        node_stats = stats.get(name, {})
        if not isinstance(node, Mapping):
            out[name] = node
        elif set(node) == {'c', 'bn'}:  # Conv2d_BN: BN after conv, scale the output channels
            scale, shift = _bn_scale_shift(node['bn'], node_stats['bn'])
            out[name] = {'c': {'kernel': node['c']['kernel'] * scale, 'bias': shift}}
        elif set(node) == {'bn', 'l'}:  # BN_Linear: BN before the linear layer, scale its inputs
            scale, shift = _bn_scale_shift(node['bn'], node_stats['bn'])
            kernel = node['l']['kernel']  # (in, out)
            out[name] = {'l': {'kernel': kernel * scale[:, None],
                               'bias': shift @ kernel + node['l']['bias']}}
        else:
            out[name] = _fold(node, node_stats)
    return out


def fold_batchnorm(variables: Mapping[str, Any]) -> dict[str, Any]:
    """Variables of an unfused EfficientViT -> variables of the `fused=True` model (eval only)."""
    return {'params': _fold(variables['params'], variables.get('batch_stats', {}))}


def cast_kernels(variables: Mapping[str, Any], dtype: Any) -> dict[str, Any]:
    """`variables` with every conv / linear `kernel` cast to `dtype` once, for a model computing in
    that dtype; biases and attention biases stay as they are. The model casts them the same way on
    every call, so the outputs are equal; on the CPU a bfloat16 kernel is then read in place by
    oneDNN instead of converted per call (GSViT at batch 1: 20 -> 15 ms, benchmarks/RESULTS.md)."""
    def cast(path, leaf):
        return leaf.astype(dtype) if getattr(path[-1], 'key', None) == 'kernel' else leaf
    return jax.tree_util.tree_map_with_path(cast, dict(variables))
