"""Where gsvit_jax keeps what it derives and can rebuild (frame indexes, built CPU kernels)."""
from __future__ import annotations

import os
import pathlib

CACHE_ENV = 'GSVIT_JAX_CACHE'


def default_cache_dir() -> pathlib.Path:
    """$GSVIT_JAX_CACHE, else ~/.cache/gsvit_jax."""
    return pathlib.Path(os.environ.get(CACHE_ENV) or pathlib.Path.home() / '.cache' / 'gsvit_jax')
