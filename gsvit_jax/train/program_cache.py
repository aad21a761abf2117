"""Compiled train and eval steps kept on disk, so that a restarted run loads them instead of
tracing the model again.

Without it a restart traces the whole forward and backward pass in Python, lowers it and hashes it
before JAX's persistent compilation cache is even asked for the executable (measured on 2 CPU
cores: a 5-step restart of the runlocal model took 28-29 s, now 20.3 s). Programs are kept beside
that cache, in `<jax_compilation_cache_dir>/gsvit_jax_programs/`, and only when one is configured
(`JAX_COMPILATION_CACHE_DIR`). A file is used only if everything that shapes the program is equal:
this package's source, the library versions, JAX's settings and XLA flags, the settings the caller
names (the config fields its step is built from), the devices, and the arguments' shapes, dtypes
and shardings. Runs of several processes always trace: each process must run the same program,
and one could find a file that another lacks.

Only freshly compiled programs are written: XLA:CPU re-serialises an executable that JAX loaded
from its persistent cache incompletely (measured: "Function cosine_add_fusion not found" when the
copy is run), so after a persistent-cache hit nothing is written and the next start goes the
usual way. The files are pickles, to be trusted like the cache directory itself; files of older
code are not removed (delete the folder to reclaim the space: ~12 MB per program for the CPU test
model).
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import pathlib
import pickle
from typing import Any

import jax
from jax.experimental.serialize_executable import deserialize_and_load, serialize

from gsvit_jax.atomic import write_atomic
from gsvit_jax.kernels import onednn

log = logging.getLogger(__name__)
SUBDIRECTORY = 'gsvit_jax_programs'
_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax')
# The module, not the factory function of the same name that `gsvit_jax.models` exports.
_EFFICIENTVIT = importlib.import_module('gsvit_jax.models.efficientvit')
_persistent_cache_hits = 0


def _count_persistent_cache_hits(event: str, **_: Any) -> None:
    global _persistent_cache_hits
    if event == '/jax/compilation_cache/cache_hits':
        _persistent_cache_hits += 1


jax.monitoring.register_event_listener(_count_persistent_cache_hits)


def compiled(name: str, jitted: Any, args: tuple, settings: dict[str, Any],
             directory: str | os.PathLike | None = None) -> jax.stages.Compiled:
    """`jitted.lower(*args).compile()`, or the same program loaded from `directory` (default:
    beside JAX's persistent cache; none configured: always compiled). `settings`: every value,
    besides the arguments, that `jitted` was built from (e.g. the model and optimiser config)."""
    directory = directory or default_directory()
    if directory is None or jax.process_count() > 1:
        return jitted.lower(*args).compile()
    path = pathlib.Path(directory) / f'{name}-{program_key(name, args, settings)}.pkl'
    if path.is_file():
        try:
            payload, in_tree, out_tree, device_ids = pickle.loads(path.read_bytes())
            devices = {d.id: d for d in jax.devices()}
            program = deserialize_and_load(payload, in_tree, out_tree, execution_devices=[
                devices[i] for i in device_ids])  # in the order the program was compiled for
            log.info('%s: compiled program loaded from %s', name, path)
            return program
        except Exception as e:  # noqa: BLE001  a damaged or foreign file: compile instead
            log.warning('%s: could not load %s (%s); compiling', name, path, e)
    hits = _persistent_cache_hits
    program = jitted.lower(*args).compile()
    if _persistent_cache_hits == hits:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            device_ids = [d.id for d in program.runtime_executable().local_devices()]
            payload = pickle.dumps((*serialize(program), device_ids))
            write_atomic(path, lambda f: f.write(payload))
        except Exception as e:  # noqa: BLE001  the run goes on; the next start traces again
            log.warning('%s: could not keep the compiled program in %s: %s', name, path.parent, e)
    return program


def default_directory() -> pathlib.Path | None:
    cache = jax.config.jax_compilation_cache_dir
    return pathlib.Path(cache) / SUBDIRECTORY if cache else None


def program_key(name: str, args: tuple, settings: dict[str, Any]) -> str:
    """sha256 (hex, 32 characters) over everything that decides what `name` compiles to."""
    digest = hashlib.sha256(name.encode())
    for part in (_source_digest(),
                 [(p, importlib.metadata.version(p)) for p in _PACKAGES],
                 sorted((k, repr(v)) for k, v in jax.config.values.items()),
                 os.environ.get('XLA_FLAGS', ''), _EFFICIENTVIT.DEPTHWISE_IMPL,
                 onednn.use_onednn(),  # and registers its kernels: a loaded program calls them
                 json.dumps(settings, sort_keys=True, default=repr),
                 [(d.platform, d.device_kind, d.id, d.process_index) for d in jax.devices()],
                 str(jax.tree_util.tree_structure(args)),
                 [(tuple(x.shape), str(x.dtype), repr(getattr(x, 'sharding', None)))
                  for x in jax.tree_util.tree_leaves(args)]):
        digest.update(repr(part).encode())
    return digest.hexdigest()[:32]


@functools.cache  # the source does not change while a run starts its steps
def _source_digest() -> str:
    package = pathlib.Path(__file__).parents[1]
    digest = hashlib.sha256()
    for path in sorted([*package.rglob('*.py'), *package.rglob('*.cc'), *package.rglob('*.h')]):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
