"""PyTorch state_dict key names for Flax variable paths, in the three layouts users meet.

- `msra`: Microsoft's original EfficientViT (`patch_embed.0.c.weight`, `blocks1.0...`, `head.l.weight`);
  the canonical layout, because the Flax module names mirror it.
- `gsvit`: the GSViT autoencoder (`evit.0.*`...`evit.3.*` for the encoder, `decoder.*`).
- `timm`: timm's `efficientvit_m*` (`patch_embed.conv1.conv.weight`, `stages.1.downsample...`).
"""
from __future__ import annotations

import re

from gsvit_jax.errors import UserError

LAYOUTS = ('msra', 'gsvit', 'timm')


class UnknownLayoutError(ValueError, UserError):
    """State_dict keys of none of the three layouts."""

_LIST_INDEX = re.compile(r'^([A-Za-z][A-Za-z0-9]*?)_(\d+)$')
_LEAF_NAMES = {'kernel': 'weight', 'scale': 'weight'}


def canonical_key(path: tuple[str, ...]) -> str:
    """Flax path (without the collection) -> msra key: `qkvs_0` -> `qkvs.0`, `kernel` -> `weight`."""
    *modules, leaf = path
    parts = [_LIST_INDEX.sub(r'\1.\2', name) for name in modules]
    return '.'.join(parts + [_LEAF_NAMES.get(leaf, leaf)])


_GSVIT_ENCODER = {'patch_embed': 'evit.0', 'blocks1': 'evit.1', 'blocks2': 'evit.2',
                  'blocks3': 'evit.3'}


def _msra_to_timm(key: str) -> str:
    parts = key.split('.')
    top = parts[0]
    if top == 'patch_embed':  # patch_embed.{0,2,4,6}.c -> patch_embed.conv{1..4}.conv
        parts[1] = f'conv{int(parts[1]) // 2 + 1}'
    elif top.startswith('blocks'):
        stage = int(top[len('blocks'):]) - 1
        index = int(parts[1])
        if stage == 0:
            head = ['stages', '0', 'blocks', str(index)]
        elif index < 3:
            head = ['stages', str(stage), 'downsample', ('res1', 'patchmerge', 'res2')[index]]
        else:
            head = ['stages', str(stage), 'blocks', str(index - 3)]
        parts = head + parts[2:]
    elif top == 'head':
        parts = ['head', {'bn': 'bn', 'l': 'linear'}[parts[1]]] + parts[2:]
    else:
        raise KeyError(f'no timm name for {key!r}')
    if len(parts) >= 2 and parts[-2] == 'c':  # Conv2d_BN's conv is `c` in msra, `conv` in timm
        parts[-2] = 'conv'
    return '.'.join(parts)


def to_layout(key: str, layout: str) -> str:
    """Rename a canonical (msra) key into `layout`."""
    if layout == 'msra':
        return key
    if layout == 'gsvit':
        if key.startswith('decoder.'):
            return key
        top, _, rest = key.removeprefix('evit.').partition('.')  # encoder alone or in the autoencoder
        if top in _GSVIT_ENCODER:
            return f'{_GSVIT_ENCODER[top]}.{rest}'
        raise KeyError(f'the GSViT layout has no {top!r} module (key {key!r}); '
                       "export the classifier with layout='msra' or 'timm'")
    if layout == 'timm':
        return _msra_to_timm(key)
    raise ValueError(f'unknown layout {layout!r}; expected one of {LAYOUTS}')


_LAYOUT_KEYS = {  # how each layout's keys start
    'gsvit': re.compile(r'(evit|decoder)\.'),
    'msra': re.compile(r'(patch_embed\.\d|blocks\d)\.'),
    'timm': re.compile(r'(patch_embed\.conv|stages)\.'),
}


def detect_layout(keys: list[str], source: str = 'state_dict') -> str:
    """The layout most keys are in (a key of another layout is then reported as unexpected),
    or an error naming `source` and what was expected."""
    counts = {layout: sum(bool(start.match(k)) for k in keys)
              for layout, start in _LAYOUT_KEYS.items()}
    best = max(counts, key=counts.get)  # ties: the order above
    if counts[best]:
        return best
    sample = ', '.join(sorted(keys)[:5]) or '(no keys)'
    raise UnknownLayoutError(
        f'{source}: unknown state_dict layout: expected GSViT keys (evit.*, decoder.*), Microsoft '
        'EfficientViT keys (patch_embed.0.*, blocks1.*) or timm keys (patch_embed.conv1.*, '
        f'stages.*); first keys seen: {sample}')
