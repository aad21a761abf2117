"""Read PyTorch weight files: `.safetensors` (no torch needed) or `torch.save` files (.pth/.pt/.pkl)."""
from __future__ import annotations

import pathlib
from typing import Any


def load_torch_file(path: str | pathlib.Path) -> dict[str, Any]:
    """Load a state_dict (or a checkpoint dict holding one) from disk onto the CPU."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'no weights file at {path}')
    if path.suffix == '.safetensors':
        from safetensors.numpy import load_file
        return load_file(str(path))
    try:
        import torch
    except ImportError as e:
        raise ImportError(f'reading {path.name} needs PyTorch: pip install "gsvit-jax[torch]"') from e
    try:
        # tensors and plain containers only: never runs code from the file
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name and what was expected
        raise ValueError(f'{path}: not a PyTorch state_dict file readable with '
                         f'torch.load(weights_only=True): {e}') from e
