"""Read `torch.save` files (the zip format, PyTorch >= 1.6) without PyTorch, as numpy arrays.

A torch.save zip holds `<name>/data.pkl` (a pickle of the containers) and `<name>/data/<key>` (each
storage's raw bytes). The pickle is read by an unpickler that resolves only tensor-rebuild calls,
storage types, dtypes and `OrderedDict`; any other global (a class, `os.system`, ...) is refused
before it can run, as `torch.load(weights_only=True)` does. Tensors come back as C-contiguous numpy
arrays (bfloat16 as `ml_dtypes.bfloat16`), bit for bit what torch.load gives; tensors that shared a
storage in the file are separate arrays here.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import pathlib
import pickle
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

from gsvit_jax.errors import UserError

# torch.<Name>Storage -> element dtype (the typed storages torch.save writes for every dtype)
_STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_, 'UntypedStorage': np.uint8,
}
# torch.<dtype> globals (pickled by _rebuild_tensor_v3 and in some metadata)
_DTYPES = {
    'float32': np.float32, 'float': np.float32, 'float64': np.float64, 'double': np.float64,
    'float16': np.float16, 'half': np.float16, 'bfloat16': ml_dtypes.bfloat16,
    'int64': np.int64, 'long': np.int64, 'int32': np.int32, 'int': np.int32, 'int16': np.int16,
    'short': np.int16, 'int8': np.int8, 'uint8': np.uint8, 'bool': np.bool_,
}


class UnsafeTorchFileError(pickle.UnpicklingError, ValueError, UserError):
    """The file's pickle asks for something other than tensors and plain containers."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
    dtype: Any


@dataclasses.dataclass
class _Storage:
    data: np.ndarray  # 1-D, the storage's elements


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple,
                    dtype: Any = None) -> np.ndarray:
    data = storage.data if dtype is None else storage.data.view(dtype)
    if not size:
        return np.array(data[offset], order='C')
    if any(s == 0 for s in size):
        return np.zeros(size, data.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if offset < 0 or last >= data.size or min(stride) < 0:
        raise ValueError(f'a tensor of size {tuple(size)} and stride {tuple(stride)} at offset '
                         f'{offset} reaches outside its storage of {data.size} elements')
    view = np.lib.stride_tricks.as_strided(data[offset:], shape=tuple(size),
                                           strides=tuple(s * data.itemsize for s in stride),
                                           writeable=False)
    return np.array(view, order='C', copy=True)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None,
                       metadata=None):
    return _rebuild_tensor(storage, offset, size, stride)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    return _rebuild_tensor(storage, offset, size, stride, dtype.dtype)


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
    return data


_GLOBALS = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
    ('torch._utils', '_rebuild_tensor_v3'): _rebuild_tensor_v3,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    **{('torch', name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
    **{('torch', name): _StorageType(dtype) for name, dtype in _DTYPES.items()},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, big_endian: bool,
                 source: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.big_endian, self.source = archive, prefix, big_endian, source
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeTorchFileError(
                f'{self.source}: refused to load {module}.{name}: only tensors and plain '
                'containers are read from weights files (as torch.load(weights_only=True)). '
                'If you trust the file, load it with PyTorch and re-save its state_dict.'
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == 'storage'
                and isinstance(pid[1], _StorageType)):
            raise UnsafeTorchFileError(f'{self.source}: unexpected persistent id {pid!r:.100}')
        _, storage_type, key, _location, _numel = pid
        key = str(key)
        if key not in self.storages:
            try:
                raw = self.archive.read(f'{self.prefix}data/{key}')
            except KeyError:
                raise ValueError(f'storage {key} is missing from the archive (truncated '
                                 'file?)') from None
            dtype = np.dtype(storage_type.dtype)
            if self.big_endian and dtype.itemsize > 1:
                data = np.frombuffer(raw, dtype.newbyteorder('>')).astype(dtype)
            else:
                data = np.frombuffer(raw, dtype)
            self.storages[key] = _Storage(data)
        return self.storages[key]


def is_torch_zip(path: str | pathlib.Path) -> bool:
    return zipfile.is_zipfile(path)


def read_torch_zip(path: str | pathlib.Path) -> Any:
    """The object `torch.save` wrote to `path`, with numpy arrays for tensors."""
    path = pathlib.Path(path)
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith('data.pkl')
                   and n.count('/') == 1]
        if len(pickles) != 1:
            raise ValueError('a zip file, but not one torch.save wrote (expected one '
                             f'<name>/data.pkl, found {len(pickles)})')
        prefix = pickles[0][:-len('data.pkl')]
        names = set(archive.namelist())
        byteorder = (archive.read(f'{prefix}byteorder').decode().strip()
                     if f'{prefix}byteorder' in names else 'little')
        unpickler = _Unpickler(archive.read(pickles[0]), archive, prefix, byteorder == 'big',
                               str(path))
        return unpickler.load()
