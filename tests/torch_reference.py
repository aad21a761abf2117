"""Helpers for tests that compare against PyTorch (timm): random but realistic weights."""
from __future__ import annotations

import csv

import numpy as np
import torch

from conftest import DATA


def randomize_(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Give every BatchNorm non-trivial running stats and affine params, and every attention-bias
    table non-zero values, so parity tests exercise them; returns the model's state_dict."""
    gen = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    for key, value in sd.items():
        if key.endswith('running_mean'):
            value.copy_(torch.randn(value.shape, generator=gen) * 0.1)
        elif key.endswith('running_var'):
            value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
        elif key.endswith('bn.weight'):
            value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
        elif key.endswith('bn.bias'):
            value.copy_(torch.randn(value.shape, generator=gen) * 0.1)
        elif key.endswith('num_batches_tracked'):
            value.fill_(int(torch.randint(1, 1000, (), generator=gen)))
        elif key.endswith('attention_biases'):
            value.copy_(torch.randn(value.shape, generator=gen))
    model.load_state_dict(sd)
    model.train()
    model.eval()  # rebuilds timm's cached attention-bias matrices from the new tables
    return sd


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
