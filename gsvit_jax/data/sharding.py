"""Device mesh with a `data` axis, host batches -> global `jax.Array`s sharded over it, and back.

Reading a global array on the host: in a multi-process run no process holds all of a batch-sharded
array, so `np.asarray` on it fails. `host_rows` replicates (the first rows of) it first, a
collective every process must join; replicated arrays (parameters, metrics) read directly.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = 'data'


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """1-D mesh over all (or the given) devices, axis `data`: pure data parallelism."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over `data`, everything else replicated."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def shard_batch(batch: Mapping[str, Any], mesh: Mesh) -> dict[str, Any]:
    """This process's part of a batch -> global arrays sharded on `data` (numeric fields only;
    strings and other objects stay host-side numpy)."""
    sharding = batch_sharding(mesh)
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        if value.dtype.kind in 'biuf':
            out[key] = jax.make_array_from_process_local_data(sharding, value)
        else:
            out[key] = value
    return out


def host_rows(tree: Any, mesh: Mesh, rows: int | None = None) -> Any:
    """Batch-sharded global arrays -> numpy on every process: the first `rows` (all if None)
    along the leading axis. Every process must call it (it gathers across processes)."""
    return jax.device_get(_first_rows(mesh, rows)(tree))


@functools.lru_cache(maxsize=None)
def _first_rows(mesh: Mesh, rows: int | None):
    return jax.jit(lambda tree: jax.tree_util.tree_map(lambda a: a[:rows], tree),
                   out_shardings=replicated(mesh))
