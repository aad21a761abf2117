"""Orbax checkpoints of the whole training state plus the Grain iterator position.

Saves are asynchronous and atomic (Orbax writes to a temporary directory and renames it when
complete), so a crash or SIGKILL mid-save leaves the previous checkpoints as they were; restore
picks the newest complete one.
"""
from __future__ import annotations

import functools
import pathlib
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from gsvit_jax.errors import UserError


class Checkpointer:
    """Keep-N asynchronous checkpoints of {'state', 'data'} under `<workdir>/checkpoints`."""

    def __init__(self, workdir: str | pathlib.Path, *, keep: int = 3, every_steps: int = 1000,
                 async_save: bool = True):
        self.directory = pathlib.Path(workdir).absolute() / 'checkpoints'
        _one_replica_writes_on_cpu()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=every_steps, create=True,
            enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=('state', 'data'))
        self._saved_step = self.manager.latest_step()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def saved_step(self) -> int | None:
        """The newest step this process saved or found, without asking the other processes."""
        return self._saved_step

    def save(self, step: int, state: Any, data_iterator: Any | None, *, force: bool = False) -> bool:
        """Save if `step` is due (or `force`); returns whether a save started."""
        items = {'state': ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items['data'] = grain.checkpoint.CheckpointSave(data_iterator)
        started = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
        if started:
            self._saved_step = step
        return started

    def restore(self, abstract_state: Any, data_iterator: Any | None,
                step: int | None = None) -> Any:
        """Restore the state (shardings from `abstract_state`) and, in place, the iterator."""
        step = self.latest_step() if step is None else step
        items = {'state': ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            _check_data_processes(self.directory / str(step) / 'data', step)
            items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored['state']

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


@functools.cache
def _one_replica_writes_on_cpu() -> None:
    """Orbax's default "replica-parallel" save has every device copy out a slice of each
    replicated array, one small jitted slice per shape and device; on CPU devices (one memory)
    that only adds compiling: 24 s of the `runlocal` run's 3 saves. One replica writes instead."""
    if jax.default_backend() == 'cpu':
        ocp.type_handlers.register_type_handler(
            jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)


def _check_data_processes(directory: pathlib.Path, step: int) -> None:
    """The data position is saved per process (`process_<i>-of-<n>.json`): it resumes only with
    the same number of processes."""
    counts = {name.rpartition('-of-')[2].removesuffix('.json')
              for name in (p.name for p in directory.glob('process_*-of-*.json'))}
    here = str(jax.process_count())
    if counts and here not in counts:
        raise UserError(f'checkpoint step {step} in {directory.parent.parent} was written by '
                        f'{" or ".join(sorted(counts))} process(es), this run has {here}: resume '
                        'with the same number of processes (the data position is per process)')


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of a pytree of arrays, the restore target."""
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)
