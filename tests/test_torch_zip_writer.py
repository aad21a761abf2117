"""Writing PyTorch weight files without PyTorch: `.pth` files that torch.load reads bit for bit,
`.safetensors` likewise, and `gsvit-convert to-torch` working where torch is not installed."""
import sys
import zipfile

import jax
import ml_dtypes
import numpy as np
import pytest
import torch

from gsvit_jax.convert import abstract_variables, load_torch_file, to_torch
from gsvit_jax.convert.checkpoints import write_variables
from gsvit_jax.convert.cli import main as convert_main
from gsvit_jax.convert.files import save_torch_file
from gsvit_jax.convert.torch_zip_writer import ALIGNMENT
from gsvit_jax.models import efficientvit


def tensors() -> dict[str, np.ndarray]:
    """Every dtype a state_dict may hold, odd shapes and memory layouts, a NaN payload."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 5)).astype(np.float32)
    base[0, 0] = np.nan
    return {
        'float32': base, 'float16': base.astype(np.float16),
        'bfloat16': base.astype(ml_dtypes.bfloat16), 'float64': base.astype(np.float64),
        'int64': np.arange(-5, 5), 'int32': np.arange(3, dtype=np.int32),
        'int16': np.arange(3, dtype=np.int16), 'int8': np.arange(-3, 3, dtype=np.int8),
        'uint8': np.arange(6, dtype=np.uint8), 'bool': np.array([True, False]),
        'scalar': np.array(7, np.int64), 'huge_dim': np.zeros((2 ** 31 + 1, 0), np.bool_),
        'empty': np.zeros((0, 3), np.float32), 'transposed': base.T,
        'big_endian': np.arange(4, dtype='>f4'), 'count_above_int32': np.array([2 ** 40]),
    }


def as_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


@pytest.mark.parametrize('mmap', [False, True])
def test_torch_load_reads_every_dtype_bit_for_bit(tmp_path, monkeypatch, mmap):
    path = tmp_path / 'all.pth'
    expected = tensors()
    with monkeypatch.context() as m:
        m.setitem(sys.modules, 'torch', None)  # written without torch
        save_torch_file(expected, path)
    loaded = torch.load(path, weights_only=True, mmap=mmap)
    assert list(loaded) == list(expected)
    for key, want in expected.items():
        got = as_numpy(loaded[key])
        assert got.shape == want.shape and got.dtype == want.dtype.newbyteorder('='), key
        assert got.tobytes() == np.asarray(want, got.dtype, order='C').tobytes(), key
    # our own reader agrees, and storages start at aligned offsets as in torch.save's files
    again = load_torch_file(path)
    assert all(again[k].tobytes() == as_numpy(loaded[k]).tobytes() for k in expected)
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            start = info.header_offset + 30 + len(info.filename) + len(info.extra)
            assert start % ALIGNMENT == 0, info.filename


def test_safetensors_round_trip_without_torch(tmp_path, monkeypatch):
    expected = tensors()  # a transposed view used to be written scrambled
    monkeypatch.setitem(sys.modules, 'torch', None)
    path = tmp_path / 'all.safetensors'
    save_torch_file(expected, path)
    loaded = load_torch_file(path)
    for key, want in expected.items():
        got = loaded[key]
        assert got.shape == want.shape and got.dtype == want.dtype.newbyteorder('='), key
        assert got.tobytes() == np.asarray(want, got.dtype, order='C').tobytes(), key


def test_convert_to_torch_needs_no_torch(tmp_path, monkeypatch):
    model = efficientvit('tiny', num_classes=0, img_size=64)
    rng = np.random.default_rng(1)
    variables = jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(s.dtype),
                                       abstract_variables(model))
    write_variables(variables, tmp_path / 'converted')
    with monkeypatch.context() as m:
        m.setitem(sys.modules, 'torch', None)
        for name in ('tiny.pth', 'tiny.safetensors'):
            assert convert_main(['to-torch', str(tmp_path / 'converted'), str(tmp_path / name),
                                 '--layout', 'msra']) == 0
    expected = to_torch(variables, 'msra')
    for loaded in (torch.load(tmp_path / 'tiny.pth', weights_only=True),
                   load_torch_file(tmp_path / 'tiny.safetensors')):
        assert set(loaded) == set(expected)
        for key, want in expected.items():
            np.testing.assert_array_equal(np.asarray(loaded[key]), want, err_msg=key)
