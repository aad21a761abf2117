"""Write a state_dict as a `torch.save` zip file without PyTorch.

The file is what `torch.save(dict_of_tensors, path)` writes (the format `torch_zip` reads): a zip of
stored entries `<name>/data.pkl` (a protocol-2 pickle of the dict, each tensor a
`torch._utils._rebuild_tensor_v2` call on a persistent storage id), `<name>/data/<i>` (each tensor's
bytes, 64-byte aligned as PyTorch aligns them), `<name>/byteorder` and `<name>/version`.
`torch.load(weights_only=True)` reads it back bit for bit.
"""
from __future__ import annotations

import pickle
import struct
import sys
import zipfile
from typing import IO, Mapping

import ml_dtypes
import numpy as np

ALIGNMENT = 64  # storages start at multiples of this offset in the file, as torch.save writes them
_PADDING_FIELD = b'FB'  # the zip extra-field id torch.save pads local headers with
_STORAGE_NAMES = {
    np.dtype(np.float32): 'FloatStorage', np.dtype(np.float64): 'DoubleStorage',
    np.dtype(np.float16): 'HalfStorage', np.dtype(ml_dtypes.bfloat16): 'BFloat16Storage',
    np.dtype(np.int64): 'LongStorage', np.dtype(np.int32): 'IntStorage',
    np.dtype(np.int16): 'ShortStorage', np.dtype(np.int8): 'CharStorage',
    np.dtype(np.uint8): 'ByteStorage', np.dtype(np.bool_): 'BoolStorage',
}


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f'{module}\n{name}\n'.encode()


def _text(text: str) -> bytes:
    data = text.encode('utf-8')
    return pickle.BINUNICODE + struct.pack('<I', len(data)) + data


def _int(n: int) -> bytes:
    if 0 <= n < 2 ** 31:
        return pickle.BININT + struct.pack('<i', n)
    return pickle.LONG1 + bytes([8]) + n.to_bytes(8, 'little', signed=True)


def _ints(values: tuple[int, ...]) -> bytes:
    return pickle.MARK + b''.join(_int(v) for v in values) + pickle.TUPLE


def _tensor(storage_key: str, array: np.ndarray) -> bytes:
    """The pickle of one C-contiguous tensor that owns storage `storage_key`."""
    strides = tuple(s // array.itemsize for s in array.strides)
    storage = (pickle.MARK + _text('storage') + _global('torch', _STORAGE_NAMES[array.dtype])
               + _text(storage_key) + _text('cpu') + _int(array.size) + pickle.TUPLE)
    hooks = _global('collections', 'OrderedDict') + pickle.EMPTY_TUPLE + pickle.REDUCE
    return (_global('torch._utils', '_rebuild_tensor_v2') + pickle.MARK + storage
            + pickle.BINPERSID + _int(0) + _ints(array.shape) + _ints(strides) + pickle.NEWFALSE
            + hooks + pickle.TUPLE + pickle.REDUCE)


def _as_tensor(key: str, value: object) -> np.ndarray:
    array = np.asarray(value)
    dtype = array.dtype.newbyteorder('=') if array.dtype.byteorder in '<>' else array.dtype
    if dtype not in _STORAGE_NAMES:
        raise ValueError(f'{key}: cannot write a tensor of dtype {array.dtype} to a torch.save '
                         f'file (supported: {", ".join(sorted(map(str, _STORAGE_NAMES)))})')
    return np.asarray(array, dtype=dtype, order='C')


def _write_entry(archive: zipfile.ZipFile, file: IO[bytes], name: str, data: bytes) -> None:
    """A stored entry whose data starts at a multiple of ALIGNMENT in the file."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    header = 30 + len(name.encode()) + 4  # local header, name and the padding field's own header
    padding = -(file.tell() + header) % ALIGNMENT
    info.extra = _PADDING_FIELD + struct.pack('<H', padding) + b'Z' * padding
    archive.writestr(info, data, compress_type=zipfile.ZIP_STORED)


def write_torch_zip(state_dict: Mapping[str, object], file: IO[bytes],
                    name: str = 'archive') -> None:
    """`state_dict` ({str: array}) into the seekable binary `file` as torch.save writes it."""
    tensors = [(key, _as_tensor(key, value)) for key, value in state_dict.items()]
    pickled = [pickle.PROTO + bytes([2]), pickle.EMPTY_DICT, pickle.MARK]
    for index, (key, array) in enumerate(tensors):
        pickled += [_text(key), _tensor(str(index), array)]
    pickled += [pickle.SETITEMS, pickle.STOP]
    with zipfile.ZipFile(file, 'w') as archive:
        _write_entry(archive, file, f'{name}/data.pkl', b''.join(pickled))
        _write_entry(archive, file, f'{name}/byteorder', sys.byteorder.encode())
        for index, (_, array) in enumerate(tensors):
            _write_entry(archive, file, f'{name}/data/{index}', array.tobytes())
        _write_entry(archive, file, f'{name}/version', b'3\n')
