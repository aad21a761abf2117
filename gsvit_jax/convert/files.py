"""PyTorch weight files: `.safetensors` (no torch needed) or torch.save (.pth/.pt/.pkl/.bin)."""
from __future__ import annotations

import pathlib
from typing import Any, Mapping

import numpy as np

from gsvit_jax.atomic import write_atomic
from gsvit_jax.convert.state_dict import to_numpy
from gsvit_jax.convert.torch_zip import UnsafeTorchFileError, is_torch_zip, read_torch_zip
from gsvit_jax.convert.torch_zip_writer import write_torch_zip
from gsvit_jax.errors import MissingFileError, UserError, first_line

TORCH_SAVE_SUFFIXES = ('.pth', '.pt', '.pkl', '.bin')
ZIP_MAGIC = b'PK\x03\x04'  # how every zip file, so every torch.save file since PyTorch 1.6, starts


class WeightsFileError(ValueError, UserError):
    """A weights file that cannot be read (damaged, truncated, another format); names the file."""


def load_torch_file(path: str | pathlib.Path) -> dict[str, Any]:
    """A state_dict (or a checkpoint dict holding one) from disk, as numpy arrays: safetensors
    and torch.save zip files without PyTorch, legacy torch.save files with it."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise MissingFileError(f'no weights file at {path}')
    if path.suffix == '.safetensors':
        from safetensors.numpy import load_file
        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - SafetensorError and others: name the file
            raise WeightsFileError(f'{path}: not a readable safetensors file: {e}') from e
    if is_torch_zip(path):  # torch.save since PyTorch 1.6: read here, torch not needed
        try:
            return read_torch_zip(path)
        except UnsafeTorchFileError:
            raise
        except Exception as e:  # noqa: BLE001 - re-raised with the file name and what was expected
            raise WeightsFileError(f'{path}: not a readable torch.save file: {e}') from e
    with open(path, 'rb') as f:
        if f.read(len(ZIP_MAGIC)) == ZIP_MAGIC:
            raise WeightsFileError(f'{path}: a damaged zip file ({path.stat().st_size} bytes, no '
                                   'readable table of contents): truncated by an interrupted '
                                   'download or copy? Fetch or save it again')
    try:
        import torch
    except ImportError as e:
        raise ImportError(f'{path.name} is not a zip file: if it is a legacy torch.save file '
                          '(before PyTorch 1.6), reading it needs PyTorch: pip install '
                          '"gsvit-jax[torch]"') from e
    try:
        # tensors and plain containers only: never runs code from the file
        loaded = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name and what was expected
        raise WeightsFileError(f'{path}: not a PyTorch state_dict file readable with '
                               f'torch.load(weights_only=True) ({first_line(e, 200)})') from e
    return _as_numpy(loaded)


def _as_numpy(tree: Any) -> Any:
    """torch tensors -> numpy arrays throughout nested dicts, lists and tuples."""
    if isinstance(tree, dict):
        return type(tree)((k, _as_numpy(v)) for k, v in tree.items())
    if isinstance(tree, (list, tuple)):
        return type(tree)(_as_numpy(v) for v in tree)
    return to_numpy(tree) if hasattr(tree, 'detach') else tree


def save_torch_file(state_dict: Mapping[str, np.ndarray], path: str | pathlib.Path) -> None:
    """Write a numpy state_dict as `.safetensors` or, for the other suffixes, the zip file
    `torch.save` writes (`torch.load` reads it); neither needs PyTorch.

    Written to a temporary file beside `path` and renamed over it, so `path` is never half-written.
    """
    path = pathlib.Path(path)
    if path.suffix not in TORCH_SAVE_SUFFIXES + ('.safetensors',):
        raise ValueError(f'{path}: unknown weights file type; use .safetensors or one of '
                         f'{", ".join(TORCH_SAVE_SUFFIXES)}')
    if path.suffix == '.safetensors':
        from safetensors.numpy import save
        # safetensors copies an array's memory as it lies: a transposed view would be scrambled
        data = save({k: np.asarray(v, order='C') for k, v in state_dict.items()})
        write_atomic(path, lambda f: f.write(data))
    else:
        write_atomic(path, lambda f: write_torch_zip(state_dict, f, path.stem))
