"""Helpers for tests that compare against PyTorch (timm): random but realistic weights."""
from __future__ import annotations

import csv

import numpy as np
import torch

from conftest import DATA
from gsvit_jax.convert.torch_random import randomize_


def timm_model(variant: str, seed: int, **kwargs) -> tuple[torch.nn.Module, dict]:
    import timm
    torch.manual_seed(seed)
    model = timm.create_model(f'efficientvit_{variant}', pretrained=False, **kwargs)
    return model, randomize_(model, seed)


def orig_to_timm_map() -> dict[str, str]:
    """The spec's verified positional map: Microsoft/GSViT key (no `evit.` prefix) -> timm key."""
    with open(DATA / 'efficientvit_m5_orig_to_timm_keys.tsv') as f:
        rows = [r for r in csv.reader(f, delimiter='\t') if r and not r[0].startswith('#')]
    return {orig: timm for orig, timm, _ in rows}


def gsvit_keys() -> dict[str, tuple[tuple[int, ...], str]]:
    """Key -> (shape, dtype) of the original GSViT autoencoder state_dict."""
    with open(DATA / 'gsvit_state_dict_keys.tsv') as f:
        rows = [r for r in csv.reader(f, delimiter='\t') if r and not r[0].startswith('#')]
    return {key: (tuple(int(n) for n in shape.strip('()').split(',') if n.strip()), dtype)
            for key, shape, dtype in rows}


def forward(model: torch.nn.Module, images_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))).numpy()
