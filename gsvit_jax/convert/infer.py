"""Which model a PyTorch state_dict belongs to (variant, input size, decoder widths), read off
its tensor shapes, and the state_dict itself from a weights file."""
from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any, Mapping

from gsvit_jax.convert.files import load_torch_file
from gsvit_jax.convert.keys import detect_layout, to_layout
from gsvit_jax.convert.state_dict import ConvertError, plain_state_dict
from gsvit_jax.models.decoder import gsvit_autoencoder
from gsvit_jax.models.efficientvit import VARIANTS, EfficientViT, efficientvit, stage_resolutions

MAX_IMG_SIZE = 1024
# msra keys whose output channels are the three stage widths, which tell M0...M5 apart
_STAGE_WIDTH_KEYS = ('patch_embed.6.c.weight', 'blocks2.1.conv3.c.weight',
                     'blocks3.1.conv3.c.weight')


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The Flax model a state_dict fits: EfficientViT variant, input size, decoder widths if any."""

    variant: str
    img_size: int
    decoder_widths: tuple[int, ...] | None = None

    def build(self) -> Any:
        if self.decoder_widths is None:
            return efficientvit(self.variant, num_classes=0, img_size=self.img_size)
        return gsvit_autoencoder(self.variant, self.img_size, self.decoder_widths)

    def describe(self) -> str:
        if self.decoder_widths is None:
            return f'EfficientViT-{self.variant.upper()} encoder at {self.img_size}px'
        return (f'GSViT autoencoder (EfficientViT-{self.variant.upper()} at {self.img_size}px, '
                f'decoder widths {self.decoder_widths})')


def read_state_dict(path: str | pathlib.Path) -> dict[str, Any]:
    """The flat state_dict of a weights file: unwrapped from `model`/`state_dict`, no `module.`."""
    return plain_state_dict(load_torch_file(path), str(path))


def resolve_layout(state_dict: Mapping[str, Any], requested: str) -> str:
    """`auto`: the detected layout; an explicit layout must not contradict the keys."""
    try:
        detected = detect_layout(list(state_dict))
    except ValueError:
        if requested == 'auto':
            raise
        return requested
    if requested not in ('auto', detected):
        raise ConvertError(f'the file has {detected}-layout keys, not {requested}; '
                           'leave --layout at auto')
    return detected


def _shape(state_dict: Mapping[str, Any], key: str, option: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise ConvertError(f'cannot infer the model: no {key!r} in the state_dict; pass {option}')
    return tuple(state_dict[key].shape)


def infer_variant(state_dict: Mapping[str, Any], layout: str) -> str:
    """M0...M5 from the three stage widths (unique per variant)."""
    widths = tuple(_shape(state_dict, to_layout(key, layout), '--variant')[0]
                   for key in _STAGE_WIDTH_KEYS)
    for name, variant in VARIANTS.items():
        if variant.embed_dim == widths:
            return name
    raise ConvertError(f'stage widths {widths} match no EfficientViT variant '
                       f'({", ".join(sorted(VARIANTS))})')


def infer_encoder_img_size(state_dict: Mapping[str, Any], layout: str) -> int:
    """The smallest multiple of 32 whose attention windows match the bias tables' sizes.

    Encoder weights depend on the input size only through these tables, so every size that
    fits them gives the same variables (GSViT/ImageNet: 224).
    """
    sides = []
    for stage in (1, 2, 3):
        first_block = 0 if stage == 1 else 3  # stages 2 and 3 start with the subsample modules
        key = to_layout(f'blocks{stage}.{first_block}.mixer.m.attn.attention_biases', layout)
        sides.append(math.isqrt(_shape(state_dict, key, '--img-size')[1]))
    windows = EfficientViT.window_size
    for size in range(32, MAX_IMG_SIZE + 1, 32):
        if [min(w, r) for w, r in zip(windows, stage_resolutions(size))] == sides:
            return size
    raise ConvertError(f'attention-bias tables of sides {sides} fit no input size up to '
                       f'{MAX_IMG_SIZE}; pass --img-size')


def infer_decoder(state_dict: Mapping[str, Any]) -> tuple[tuple[int, ...], int]:
    """Decoder widths and the image size: conv1 is (w0, w1, 4, 4), conv2-4 (w_i-1, w_i, 4, 4), and
    the fc layer has base^2 * w0 outputs for a 32 * base image."""
    widths = [_shape(state_dict, 'decoder.conv1.weight', '--img-size')[0]]
    widths += [_shape(state_dict, f'decoder.conv{i}.weight', '--img-size')[1] for i in range(1, 5)]
    units = _shape(state_dict, 'decoder.fc.weight', '--img-size')[0]
    base = math.isqrt(units // widths[0])
    if base * base * widths[0] != units:
        raise ConvertError(f'decoder.fc has {units} outputs, not base^2 x {widths[0]}')
    return tuple(widths), 32 * base


def infer_model(state_dict: Mapping[str, Any], layout: str, variant: str | None = None,
                img_size: int | None = None) -> ModelSpec:
    """The model of a state_dict; `variant`/`img_size` override what the shapes say."""
    variant = variant or infer_variant(state_dict, layout)
    if any(k.startswith('decoder.') for k in state_dict):
        widths, decoder_size = infer_decoder(state_dict)
        return ModelSpec(variant, img_size or decoder_size, widths)
    return ModelSpec(variant, img_size or infer_encoder_img_size(state_dict, layout))
