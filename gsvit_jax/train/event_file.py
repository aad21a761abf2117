"""TensorBoard event files written directly: scalars and PNG images as TFRecord-framed `Event`
protocol buffers, the format TensorBoard reads. No TensorFlow, PyTorch or tensorboardX to import
(tensorboardX imports PyTorch when it is installed: 3 s at the start of every run)."""
from __future__ import annotations

import io
import pathlib
import socket
import struct
import time

import numpy as np
from PIL import Image


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)  # Castagnoli polynomial, reflected
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> bytes:
    crc = crc32c(data)
    return struct.pack('<I', (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _message(number: int, payload: bytes) -> bytes:  # also strings and bytes
    return _key(number, 2) + _varint(len(payload)) + payload


def _event(step: int, *, file_version: str | None = None, values: bytes = b'') -> bytes:
    """Event{wall_time=1 (double), step=2 (int64), file_version=3, summary=5 {value=1 ...}}."""
    event = _key(1, 1) + struct.pack('<d', time.time()) + _key(2, 0) + _varint(step)
    if file_version is not None:
        event += _message(3, file_version.encode())
    if values:
        event += _message(5, values)
    return event


def _summary_value(tag: str, field: bytes) -> bytes:
    return _message(1, _message(1, tag.encode()) + field)  # Summary.value{tag=1, ...}


class EventFileWriter:
    """One `events.out.tfevents.*` file in `directory`; TensorBoard shows it with the run's name."""

    def __init__(self, directory: str | pathlib.Path):
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}'
        self._file = open(self.path, 'ab')
        self._write(_event(0, file_version='brain.Event:2'))

    def _write(self, record: bytes) -> None:
        length = struct.pack('<Q', len(record))
        self._file.write(length + _masked_crc(length) + record + _masked_crc(record))

    def scalar(self, tag: str, value: float, step: int) -> None:
        simple_value = _key(2, 5) + struct.pack('<f', float(value))  # Value.simple_value=2
        self._write(_event(step, values=_summary_value(tag, simple_value)))

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """HWC uint8 RGB, stored as PNG (Value.image=4: height, width, colorspace, bytes)."""
        png = io.BytesIO()
        Image.fromarray(np.asarray(image, np.uint8)).save(png, format='PNG')
        height, width = image.shape[:2]
        encoded = (_key(1, 0) + _varint(height) + _key(2, 0) + _varint(width) + _key(3, 0)
                   + _varint(3) + _message(4, png.getvalue()))
        self._write(_event(step, values=_summary_value(tag, _message(4, encoded))))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()
