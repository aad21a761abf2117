"""Flax variables <-> PyTorch state_dicts, with no silent partial loads.

`to_torch(variables, layout)` gives a flat `{key: numpy array}` that `load_state_dict(strict=True)`
accepts in the chosen layout; `from_torch(state_dict, template)` fills a variables tree of the
template's structure, and raises one `StateDictMismatchError` listing every missing key, unexpected
key, wrong shape and value that cannot be loaded (a float tensor holding NaN/Inf, integers where
floats belong). Values may be torch tensors or numpy arrays; torch is never imported here.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Iterable, Mapping

import jax.numpy as jnp
import ml_dtypes
import numpy as np

from gsvit_jax.convert.keys import LAYOUTS, canonical_key, detect_layout, to_layout
from gsvit_jax.errors import UserError
from gsvit_jax.models.efficientvit import attention_bias_index
from gsvit_jax.models.random_init import variable_shapes

COLLECTIONS = ('params', 'batch_stats')
BIAS_TABLE = 'attention_biases'
BIAS_INDEX = 'attention_bias_idxs'
# Derived entries: accepted when present (and checked), rebuilt when absent.
_DERIVED_LEAVES = (BIAS_INDEX, 'num_batches_tracked')


class ConvertError(Exception):
    """Weights or a checkpoint that cannot be converted as asked; the message says why."""


class NotAStateDictError(ValueError, UserError):
    """The weights hold something other than a state_dict (a dict of name -> tensor)."""


class StateDictMismatchError(ValueError, UserError):
    """A state_dict does not fit the model: lists every missing, unexpected and mis-shaped key
    and every value that cannot be loaded (`invalid`: key and why)."""

    def __init__(self, layout: str, missing: list[str], unexpected: list[str],
                 mismatched: list[tuple[str, tuple, tuple]], hint: str = '', *,
                 invalid: Iterable[tuple[str, str]] = (), source: str = 'state_dict'):
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        self.invalid = list(invalid)
        lines = [f'{source} ({layout} layout) does not match the model:']

        def block(title: str, items: list[str]) -> None:
            if items:
                lines.append(f'  {title} ({len(items)}):')
                lines.extend(f'    {item}' for item in items[:25])
                if len(items) > 25:
                    lines.append(f'    ... and {len(items) - 25} more')

        block('missing keys', missing)
        block('unexpected keys', unexpected)
        block('shape mismatches (key: expected vs found)',
              [f'{k}: {tuple(e)} vs {tuple(f)}' for k, e, f in mismatched])
        block('values that cannot be loaded', [f'{k}: {why}' for k, why in self.invalid])
        if hint:
            lines.append(hint)
        super().__init__('\n'.join(lines))


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterable[tuple[tuple, Any]]:
    for name, value in tree.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, prefix + (name,))
        else:
            yield prefix + (name,), value


def _torch_axes(path: tuple[str, ...], ndim: int) -> tuple[int, ...] | None:
    """Axis permutation Flax -> PyTorch for a leaf, or None when the layout is the same."""
    if path[-1] != 'kernel':
        return None
    if ndim == 4:
        return (3, 2, 0, 1)  # HWIO -> OIHW
    if ndim == 2:
        return (1, 0)  # (in, out) -> (out, in)
    return None


def _entries(template: Mapping[str, Any], layout: str):
    """(torch key, collection, flax path, flax shape, dtype) for every leaf of a variables tree."""
    for collection in COLLECTIONS:
        for path, leaf in _flatten(template.get(collection, {})):
            yield (to_layout(canonical_key(path), layout), collection, path,
                   tuple(leaf.shape), leaf.dtype)


def _torch_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    axes = _torch_axes(path, len(shape))
    return shape if axes is None else tuple(shape[a] for a in axes)


def _index_key(bias_key: str) -> str:
    return bias_key[: -len(BIAS_TABLE)] + BIAS_INDEX


def to_torch(variables: Mapping[str, Any], layout: str = 'msra') -> dict[str, np.ndarray]:
    """Flax variables -> flat PyTorch state_dict of numpy arrays in `layout` (msra, gsvit, timm).

    Includes `num_batches_tracked` (int64) and, except for timm where it is not persistent,
    `attention_bias_idxs`. Wrap with `torch.from_numpy` (see `numpy_to_torch`) to load in PyTorch.
    """
    if layout not in LAYOUTS:
        raise ValueError(f'unknown layout {layout!r}; expected one of {LAYOUTS}')
    out: dict[str, np.ndarray] = {}
    for key, collection, path, _, _ in _entries(variables, layout):
        value = np.asarray(_get(variables[collection], path))
        axes = _torch_axes(path, value.ndim)
        value = np.array(value if axes is None else value.transpose(axes), order='C')
        if path[-1] == 'num_batches_tracked':
            value = value.astype(np.int64)
        out[key] = value
        if path[-1] == BIAS_TABLE and layout != 'timm':
            out[_index_key(key)] = attention_bias_index(math.isqrt(value.shape[1]))
    return out


def numpy_to_torch(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """numpy state_dict -> torch tensors (imports torch); bfloat16 kept exactly."""
    import torch

    def tensor(value: np.ndarray) -> Any:
        value = np.array(value, order='C')
        if value.dtype == ml_dtypes.bfloat16:  # torch.from_numpy knows no bfloat16
            return torch.from_numpy(value.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(value)

    return {k: tensor(v) for k, v in state_dict.items()}


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for name in path:
        tree = tree[name]
    return tree


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor (bfloat16 kept exactly, as `ml_dtypes.bfloat16`) or array as numpy."""
    if hasattr(value, 'detach'):  # torch.Tensor without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == 'torch.bfloat16':
            torch = sys.modules['torch']  # loaded already: value is one of its tensors
            return value.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        value = value.numpy()
    return np.asarray(value)


def unwrap_checkpoint(checkpoint: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return the state_dict inside a training checkpoint (`model` / `state_dict` key) or itself."""
    for wrapper in ('model', 'state_dict'):
        inner = checkpoint.get(wrapper)
        if isinstance(inner, Mapping):
            return inner
    return checkpoint


def plain_state_dict(loaded: Any, source: str = 'state_dict') -> dict[str, Any]:
    """The flat state_dict in what a weights file held: unwrapped from a checkpoint's `model` /
    `state_dict`, without DataParallel's `module.`; anything else is a `NotAStateDictError`."""
    if not isinstance(loaded, Mapping):
        raise NotAStateDictError(f'{source} holds a {type(loaded).__name__}, not a state_dict '
                                 '(a dict of name -> tensor)')
    state_dict = dict(unwrap_checkpoint(loaded))
    odd = [k for k in state_dict if not isinstance(k, str)]
    if odd:
        raise NotAStateDictError(f'{source}: state_dict keys are parameter names (strings); found '
                                 f'{len(odd)} other key(s), e.g. {odd[0]!r}')
    if state_dict and all(k.startswith('module.') for k in state_dict):  # saved from DataParallel
        state_dict = {k[len('module.'):]: v for k, v in state_dict.items()}
    return state_dict


def _fits(expected: tuple[int, ...], found: tuple[int, ...]) -> bool:
    """Same shape, or a 1x1 conv kernel stored without its two trailing singleton axes."""
    return found == expected or (len(expected) == 4 and expected[2:] == (1, 1)
                                 and found == expected[:2])


def _array(value: Any) -> np.ndarray | None:
    """A tensor or array as numpy; None for anything else (a number, a string, a list...)."""
    if hasattr(value, 'detach') or hasattr(value, '__array__'):
        return to_numpy(value)
    return None


def _converted(value: np.ndarray, dtype: Any) -> tuple[np.ndarray | None, str]:
    """`value` as `dtype`, or None and why not. Floats come from any float type (float64 rounded
    to nearest, as PyTorch's `load_state_dict` copies), integers from any integer type that holds
    them; never across the two, and never a NaN or Inf."""
    dtype = np.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating):
        if not jnp.issubdtype(value.dtype, jnp.floating):
            return None, f'expected floating-point values ({dtype}), found {value.dtype}'
        if not np.isfinite(value).all():
            bad = value.size - int(np.count_nonzero(np.isfinite(value)))
            return None, (f'{bad} of {value.size} values are NaN or Inf (trained weights never '
                          'hold them: a diverged run or a damaged file?)')
        with np.errstate(over='ignore'):
            out = value.astype(dtype)
        if not np.isfinite(out).all():
            return None, f'values up to {np.abs(value).max():g} exceed the range of {dtype}'
        return out, ''
    if not jnp.issubdtype(value.dtype, jnp.integer):
        return None, f'expected integers ({dtype}), found {value.dtype}'
    info = np.iinfo(dtype)
    if value.size and (value.min() < info.min or value.max() > info.max):
        return None, f'values {value.min()}...{value.max()} do not fit {dtype}'
    return value.astype(dtype), ''


def from_torch(state_dict: Mapping[str, Any], template: Mapping[str, Any], *, layout: str = 'auto',
               drop_prefixes: Iterable[str] = (), source: str = 'state_dict') -> dict[str, Any]:
    """PyTorch state_dict (tensors or arrays, any of the three layouts) -> Flax variables.

    `template` is the model's variables or their shapes (`jax.eval_shape(model.init, ...)`).
    Keys starting with one of `drop_prefixes` (in the checkpoint's naming, e.g. `head.` or
    `decoder.`) are dropped on purpose; every other difference, and every value that would not
    load exactly (NaN/Inf, integers for floats, out of range), raises `StateDictMismatchError`
    naming `source` (e.g. the file).
    """
    state_dict = plain_state_dict(state_dict, source)
    if layout == 'auto':
        layout = detect_layout(list(state_dict), source)
    elif layout not in LAYOUTS:
        raise ValueError(f'unknown layout {layout!r}; expected one of {LAYOUTS} or "auto"')
    drop = tuple(drop_prefixes)
    found = {k: v for k, v in state_dict.items() if not (drop and k.startswith(drop))}

    expected = {}
    for key, collection, path, shape, dtype in _entries(template, layout):
        expected[key] = (collection, path, shape, dtype)
    optional = {}
    for key, (_, path, shape, _) in expected.items():
        if path[-1] == BIAS_TABLE and layout != 'timm':
            optional[_index_key(key)] = attention_bias_index(math.isqrt(shape[1]))

    missing = [k for k, (_, path, _, _) in expected.items()
               if k not in found and path[-1] not in _DERIVED_LEAVES]
    unexpected = [k for k in found if k not in expected and k not in optional]
    mismatched, invalid, values = [], [], {}
    for key, (collection, path, shape, dtype) in expected.items():
        if key not in found:
            continue
        value = _array(found[key])
        if value is None:
            invalid.append((key, f'expected a tensor, found {type(found[key]).__name__}'))
            continue
        torch_shape = _torch_shape(path, shape)
        if not _fits(torch_shape, value.shape):
            mismatched.append((key, torch_shape, value.shape))
            continue
        value, problem = _converted(value, dtype)
        if value is None:
            invalid.append((key, problem))
            continue
        value = value.reshape(torch_shape)
        axes = _torch_axes(path, value.ndim)
        if axes is not None:
            value = value.transpose(np.argsort(axes))
        values[(collection, path)] = value
    for key, index in optional.items():
        if key in found:
            value = _array(found[key])
            if value is None or value.shape != index.shape:
                mismatched.append((key, index.shape, getattr(value, 'shape', ())))
            elif not np.array_equal(value, index):
                invalid.append((key, 'differs from the index EfficientViT derives from the '
                                     'attention window (a damaged file?)'))
    if missing or unexpected or mismatched or invalid:
        raise StateDictMismatchError(layout, missing, unexpected, mismatched,
                                     _hint(state_dict, layout, mismatched), invalid=invalid,
                                     source=source)

    variables: dict[str, Any] = {}
    for key, (collection, path, shape, dtype) in expected.items():
        value = values.get((collection, path))
        if value is None:  # a derived counter absent from old checkpoints
            value = np.zeros(shape, dtype)
        node = variables.setdefault(collection, {})
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = jnp.asarray(value)
    return variables


def _hint(state_dict: Mapping[str, Any], layout: str,
          mismatched: list[tuple[str, tuple, tuple]]) -> str:
    """What explains a mismatch: weights of another EfficientViT variant (read off the stage
    widths), or only attention-bias tables sized for another input resolution."""
    from gsvit_jax.convert.infer import infer_variant  # infer imports this module
    try:
        variant = infer_variant(state_dict, layout)
    except (ConvertError, KeyError, ValueError):
        variant = None
    if variant and any(BIAS_TABLE not in k and BIAS_INDEX not in k for k, _, _ in mismatched):
        return (f'hint: by its stage widths the file holds EfficientViT-{variant.upper()} '
                f'weights; build the model with variant={variant!r}.')
    if any(BIAS_TABLE in k or BIAS_INDEX in k for k, _, _ in mismatched):
        return ('hint: attention bias tables are sized from the input resolution; build the '
                'model with the img_size the weights were trained at (GSViT: 224).')
    return ''


def abstract_variables(model: Any, img_size: int | None = None) -> Any:
    """Shapes/dtypes of `model`'s variables without allocating them (a `from_torch` template)."""
    return variable_shapes(model, img_size or model.img_size)


def select_variables(variables: Mapping[str, Any], layout: str,
                     encoder_only: bool) -> tuple[dict[str, Any], str]:
    """The variables to export and what they are: the whole autoencoder only in the gsvit layout
    without `encoder_only`; otherwise the encoder alone (msra and timm have no decoder)."""
    params = variables['params']
    if 'evit' not in params and 'patch_embed' not in params:
        raise ConvertError(f'the checkpoint holds no EfficientViT encoder (top-level params: '
                           f'{sorted(params)})')
    if layout == 'gsvit' and not encoder_only and 'decoder' in params:
        return dict(variables), 'autoencoder'
    encoder = {c: tree['evit'] for c, tree in variables.items()} if 'evit' in params else variables
    if layout == 'gsvit' and 'head' in encoder['params']:
        raise ConvertError('the checkpoint has a classifier head, which the gsvit layout cannot '
                           'hold; use --layout msra or timm')
    return dict(encoder), 'encoder'
