"""Initial weights from elsewhere: PyTorch files (GSViT.pkl, ImageNet EfficientViT, timm) or Orbax
checkpoints (a `gsvit_jax.convert from-torch` output or another run's workdir)."""
from __future__ import annotations

import logging
import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from gsvit_jax.convert import detect_layout, from_torch, load_torch_file
from gsvit_jax.convert.state_dict import plain_state_dict

log = logging.getLogger(__name__)
COLLECTIONS = ('params', 'batch_stats')
TORCH_SUFFIXES = ('.pth', '.pt', '.pkl', '.bin', '.safetensors')


def _encoder_part(tree: dict[str, Any]) -> dict[str, Any]:
    return {c: tree[c]['evit'] for c in COLLECTIONS}


def _with_encoder(variables: dict[str, Any], encoder: dict[str, Any]) -> dict[str, Any]:
    return {c: {**variables[c], 'evit': encoder[c]} for c in COLLECTIONS}


def check_same_structure(loaded: Any, template: Any, source: str) -> None:
    want = {jax.tree_util.keystr(p): tuple(x.shape)
            for p, x in jax.tree_util.tree_leaves_with_path(template)}
    got = {jax.tree_util.keystr(p): tuple(np.shape(x))
           for p, x in jax.tree_util.tree_leaves_with_path(loaded)}
    if want != got:
        missing = sorted(set(want) - set(got))[:10]
        unexpected = sorted(set(got) - set(want))[:10]
        shapes = [f'{k}: {want[k]} vs {got[k]}' for k in want if k in got and want[k] != got[k]][:10]
        raise ValueError(f'{source} does not fit the model: missing {missing}, unexpected '
                         f'{unexpected}, shape mismatches {shapes}')


def load_torch_weights(path: str, variables: dict[str, Any]) -> dict[str, Any]:
    """A GSViT autoencoder file replaces everything; an encoder-only file (ImageNet EfficientViT,
    timm, GSViT without decoder) replaces the encoder and keeps the given decoder."""
    state_dict = plain_state_dict(load_torch_file(path), path)
    layout = detect_layout(list(state_dict), path)
    template = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), variables)
    if layout == 'gsvit' and any(k.startswith('decoder.') for k in state_dict):
        log.info('initialising encoder and decoder from %s', path)
        return from_torch(state_dict, template, layout=layout, source=path)
    log.info('initialising the encoder from %s (%s layout); decoder keeps its init', path, layout)
    encoder = from_torch(state_dict, _encoder_part(template), layout=layout,
                         drop_prefixes=('head.',), source=path)
    return _with_encoder(variables, encoder)


def read_orbax_tree(path: str | pathlib.Path) -> dict[str, Any]:
    """The newest checkpoint's item `variables` (a `convert from-torch` output) or `state` (a
    training workdir), as saved, under `path` or `path/checkpoints`. Arrays land on this process's
    first device, whatever devices or hosts saved them (e.g. a multi-host run read on a laptop)."""
    root = pathlib.Path(path).absolute()
    directory = root / 'checkpoints' if (root / 'checkpoints').is_dir() else root
    with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True),
                               item_names=('state', 'variables')) as manager:
        step = manager.latest_step()
        if step is None:
            raise FileNotFoundError(f'no checkpoint under {directory}')
        items = set(manager.item_metadata(step).keys())
    name = 'variables' if 'variables' in items else 'state'
    return restore_locally(directory / str(step) / name)


def restore_locally(item_dir: str | pathlib.Path) -> Any:
    """One saved item (a StandardSave pytree) restored onto this process's first device."""
    checkpointer = ocp.StandardCheckpointer()
    metadata = checkpointer.metadata(item_dir)
    tree = getattr(metadata, 'item_metadata', metadata)
    tree = getattr(tree, 'tree', tree)
    here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here),
                                    tree)
    restored = checkpointer.restore(item_dir, target)
    checkpointer.close()
    return restored


def load_orbax_variables(path: str, variables: dict[str, Any]) -> dict[str, Any]:
    """Variables from a `convert from-torch` checkpoint or the newest training checkpoint of a
    workdir (see `read_orbax_tree`)."""
    tree = read_orbax_tree(path)
    loaded = {c: tree[c] for c in COLLECTIONS}
    if set(loaded['params']) == {'evit'}:  # an autoencoder's encoder saved on its own
        loaded = _encoder_part(loaded)
    if 'decoder' not in loaded['params']:
        check_same_structure(loaded, _encoder_part(variables), str(path))
        return _with_encoder(variables, loaded)
    check_same_structure(loaded, variables, str(path))
    return loaded


def load_initial_variables(path: str, variables: dict[str, Any]) -> dict[str, Any]:
    """Dispatch on the path: a PyTorch weights file or an Orbax checkpoint directory."""
    if pathlib.Path(path).suffix in TORCH_SUFFIXES:
        return load_torch_weights(path, variables)
    return load_orbax_variables(path, variables)
