"""Atomic file writes: write a temporary file beside the target, then rename it over the target.

A reader, a crash or a kill never sees half a file: the target holds either its old content or the
new one. A failed write removes its temporary file.
"""
from __future__ import annotations

import os
import pathlib
import tempfile
from typing import IO, Callable


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> pathlib.Path:
    """`write(binary file)`, then rename the file to `path` (mode 0644, like a plain write)."""
    path = pathlib.Path(path)
    f = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp',
                                    delete=False)
    try:
        with f:
            write(f)
        os.chmod(f.name, 0o644)  # NamedTemporaryFile creates 0600: the output would be private
        os.replace(f.name, path)
    except BaseException:
        pathlib.Path(f.name).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> pathlib.Path:
    """Write `text` as UTF-8 to `path` atomically."""
    return write_atomic(path, lambda f: f.write(text.encode('utf-8')))
