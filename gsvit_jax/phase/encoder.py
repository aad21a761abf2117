"""The frozen GSViT encoder of phase recognition: build, load weights, fingerprint, encode.

Weights come from a PyTorch file (GSViT.pkl, ImageNet `efficientvit_m5.pth`, timm; head and
decoder keys dropped), a pre-training workdir, a `gsvit-convert from-torch` output or a phase
workdir. The encoder is only ever applied in eval mode (BatchNorm running statistics, never
updated) and outside any gradient, which is what "frozen" means here.
"""
from __future__ import annotations

import hashlib
import logging
import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gsvit_jax.convert import abstract_variables, from_torch, load_torch_file
from gsvit_jax.data.transforms import to_model_input
from gsvit_jax.models.efficientvit import EfficientViT, efficientvit
from gsvit_jax.models.phase_head import head_input
from gsvit_jax.models.random_init import random_variables
from gsvit_jax.train.init import (COLLECTIONS, TORCH_SUFFIXES, check_same_structure,
                                  read_orbax_tree)

log = logging.getLogger(__name__)


def build_encoder(variant: str = 'm5', img_size: int = 224) -> EfficientViT:
    """EfficientViT without head or pooling: (B, S, S, 3) -> (B, h, w, C)."""
    return efficientvit(variant, num_classes=0, img_size=img_size)


def _encoder_from_tree(tree: dict[str, Any]) -> dict[str, Any]:
    """Encoder collections of a phase state (`encoder`), an autoencoder (`evit`) or an encoder."""
    if 'encoder' in tree:
        tree = tree['encoder']
    out = {}
    for c in COLLECTIONS:
        if c not in tree:
            raise ValueError(f'checkpoint has no {c!r} collection (found {sorted(tree)})')
        out[c] = tree[c]['evit'] if 'evit' in tree[c] else tree[c]
    return out


def load_encoder_variables(path: str, model: EfficientViT) -> dict[str, Any]:
    """Encoder variables for `model` from a PyTorch file or an Orbax checkpoint directory."""
    template = abstract_variables(model)
    source = pathlib.Path(path)
    if source.suffix in TORCH_SUFFIXES:
        variables = from_torch(load_torch_file(source), template,
                               drop_prefixes=('head.', 'decoder.'), source=str(source))
    else:
        variables = _encoder_from_tree(read_orbax_tree(source))
        check_same_structure(variables, template, str(path))
    log.info('frozen encoder weights from %s', path)
    return jax.tree_util.tree_map(jnp.asarray, variables)


def initial_encoder_variables(model: EfficientViT, init_from: str, seed: int) -> dict[str, Any]:
    """Loaded weights, or (no `init_from`) a random init with a warning: fine for tests only."""
    if init_from:
        return load_encoder_variables(init_from, model)
    log.warning('no encoder weights given (config.encoder.init_from): using a RANDOM encoder')
    return random_variables(model, model.img_size, seed)


def fingerprint(variables: Any, **settings: Any) -> str:
    """sha256 over the encoder's arrays and the settings that change its output."""
    digest = hashlib.sha256(repr(sorted(settings.items())).encode())
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables):
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return digest.hexdigest()[:16]


def encode(model: EfficientViT, variables: Any, images: jnp.ndarray,
           pooled: bool = False) -> jnp.ndarray:
    """uint8 BGR (B, S, S, 3) -> latent (B, D), frozen: eval mode and no gradient."""
    features = model.apply(jax.lax.stop_gradient(variables), to_model_input(images))
    return head_input(features, pooled)


def padded_size(n: int, devices: int) -> int:
    """Batch size `n` is padded to: a power of two (a multiple of `devices`), so the ragged last
    batches of a video list compile a few programs, not one per size."""
    size = max(1 << max(n - 1, 0).bit_length(), devices)
    return -(-size // devices) * devices


def make_encode_fn(model: EfficientViT, variables: Any, mesh: Any) -> Callable:
    """Jitted uint8 batch -> flattened latent, batch sharded on the mesh (padded to fit). The
    mesh must hold only this process's devices (`jax.local_devices()`): each process encodes on
    its own."""
    from gsvit_jax.data.sharding import batch_sharding, replicated
    fn = jax.jit(lambda v, x: encode(model, v, x),
                 in_shardings=(replicated(mesh), batch_sharding(mesh)),
                 out_shardings=batch_sharding(mesh))
    variables = jax.device_put(variables, replicated(mesh))
    devices, sharding = mesh.devices.size, batch_sharding(mesh)

    def run(images: np.ndarray) -> np.ndarray:
        n = len(images)
        pad = padded_size(n, devices) - n
        if pad:
            images = np.concatenate([images, np.repeat(images[-1:], pad, axis=0)])
        # placed explicitly: in a multi-process run jit refuses numpy for a sharded argument
        return np.asarray(jax.device_get(fn(variables, jax.device_put(images, sharding))))[:n]

    return run
