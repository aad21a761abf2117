"""Reading torch.save files without PyTorch: bit-identical to torch.load for every layout, and a
pickle that would run code is refused before anything runs."""
import collections
import io
import os
import pickle
import sys
import zipfile

import ml_dtypes
import numpy as np
import pytest
import torch

from gsvit_jax.convert import load_torch_file
from gsvit_jax.convert.torch_zip import UnsafeTorchFileError, read_torch_zip


def raw(t: torch.Tensor) -> np.ndarray:
    """A torch tensor's bytes as numpy (bfloat16 through int16: numpy has no bfloat16)."""
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def assert_same(expected, found, where='root'):
    if isinstance(expected, torch.Tensor):
        assert isinstance(found, np.ndarray), where
        want = raw(expected)
        assert found.dtype == want.dtype and found.shape == want.shape, where
        assert found.flags.c_contiguous and found.flags.writeable, where
        assert found.tobytes() == want.tobytes(), where  # bit for bit (NaN payloads included)
    elif isinstance(expected, dict):
        assert type(found) is type(expected) and list(found) == list(expected), where
        for key in expected:
            assert_same(expected[key], found[key], f'{where}.{key}')
    elif isinstance(expected, (list, tuple)):
        assert type(found) is type(expected) and len(found) == len(expected), where
        for i, (a, b) in enumerate(zip(expected, found)):
            assert_same(a, b, f'{where}[{i}]')
    else:
        assert found == expected, where


def layouts() -> dict:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g)
    base[0, 0] = float('nan')
    shared = torch.arange(24, dtype=torch.float32)
    conv = torch.nn.Conv2d(3, 4, 3)
    return {
        'float32': base,
        'float16': base.half(),
        'bfloat16': base.bfloat16(),
        'float64': base.double(),
        'int64': torch.arange(-5, 5),
        'int8_uint8_bool': [torch.arange(-3, 3, dtype=torch.int8),
                            torch.arange(6, dtype=torch.uint8), torch.tensor([True, False])],
        'scalar': torch.tensor(3.5),
        'empty': torch.zeros(0, 3),
        'transposed': base.t(),  # non-contiguous
        'offset_slice': base[2:, 1::2],  # offset and strides into a larger storage
        'expanded': torch.ones(1, 3).expand(4, 3),  # stride 0
        'shared_a': shared[:12].view(3, 4),  # two tensors, one storage
        'shared_b': shared[6:].view(3, 6),
        'parameter': torch.nn.Parameter(torch.ones(2, 2)),
        'module_state_dict': conv.state_dict(),  # OrderedDict
        'checkpoint': {'model': collections.OrderedDict(w=base), 'epoch': 3, 'lr': 1e-3,
                       'name': 'gsvit', 'tags': ('a', 'b'), 'none': None},
    }


def test_every_layout_reads_bit_identical_to_torch_load(tmp_path):
    path = tmp_path / 'layouts.pth'
    torch.save(layouts(), path)
    assert_same(torch.load(path, weights_only=True), read_torch_zip(path))
    assert_same(torch.load(path, weights_only=True), load_torch_file(path))


def test_a_real_model_file_reads_without_torch(tmp_path, monkeypatch):
    import timm
    model = timm.create_model('efficientvit_m0', pretrained=False)
    path = tmp_path / 'efficientvit_m0.pth'
    torch.save({'model': model.state_dict()}, path)
    expected = torch.load(path, weights_only=True)
    monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` now fails
    assert_same(expected, load_torch_file(path))


class RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def write_zip(path, data_pkl: bytes):
    with zipfile.ZipFile(path, 'w') as z:
        z.writestr('archive/data.pkl', data_pkl)
        z.writestr('archive/version', '3\n')


def test_a_pickle_that_would_run_a_command_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    write_zip(path, pickle.dumps({'weight': RunsACommand(marker)}, protocol=2))
    with pytest.raises(UnsafeTorchFileError, match=r'evil\.pth: refused to load (posix|os)\.system'):
        load_torch_file(path)
    assert not marker.exists()
    # hidden in a legitimate file's pickle, next to real tensors
    buffer = io.BytesIO()
    torch.save({'w': torch.ones(2)}, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as z:
        names = {n: z.read(n) for n in z.namelist()}
    evil = tmp_path / 'mixed.pth'
    with zipfile.ZipFile(evil, 'w') as z:
        for name, data in names.items():
            if name.endswith('data.pkl'):
                data = pickle.dumps([RunsACommand(marker)], protocol=2)
            z.writestr(name, data)
    with pytest.raises(UnsafeTorchFileError, match='only tensors and plain containers'):
        read_torch_zip(evil)
    assert not marker.exists()


def test_damaged_files_name_the_file(tmp_path):
    good = tmp_path / 'good.pth'
    torch.save({'w': torch.ones(3)}, good)
    with zipfile.ZipFile(good) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    missing = tmp_path / 'missing_storage.pth'
    with zipfile.ZipFile(missing, 'w') as z:
        for name, data in entries.items():
            if '/data/' not in name:
                z.writestr(name, data)
    with pytest.raises(ValueError, match=r'missing_storage\.pth.*storage 0 is missing'):
        load_torch_file(missing)
    not_torch = tmp_path / 'other.pth'
    with zipfile.ZipFile(not_torch, 'w') as z:
        z.writestr('readme.txt', 'hello')
    with pytest.raises(ValueError, match=r'other\.pth: .*expected one <name>/data\.pkl'):
        load_torch_file(not_torch)


def test_legacy_format_needs_torch_and_says_so(tmp_path, monkeypatch):
    path = tmp_path / 'legacy.pth'
    state = {'w': torch.arange(4.0)}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert_same(state, load_torch_file(path))  # read by torch.load(weights_only=True)
    monkeypatch.setitem(sys.modules, 'torch', None)
    with pytest.raises(ImportError, match=r'legacy\.pth is not a zip file.*before PyTorch 1\.6'):
        load_torch_file(path)
