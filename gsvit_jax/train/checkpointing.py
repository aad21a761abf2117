"""Orbax checkpoints of the whole training state plus the Grain iterator position.

Saves are asynchronous and atomic (Orbax writes to a temporary directory and renames it when
complete), so a crash or SIGKILL mid-save leaves the previous checkpoints as they were; restore
picks the newest complete one. A complete checkpoint damaged later (a truncated or corrupted file)
is moved to `<workdir>/damaged_checkpoints/` with a warning, and the run resumes from the newest
readable one. A save that runs out of disk space stops the run with one line; the older
checkpoints stay as they were.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import logging
import pathlib
import shutil
from typing import Any, Iterator

import grain
import jax
import orbax.checkpoint as ocp

from gsvit_jax.errors import UserError, describe, first_line

log = logging.getLogger(__name__)
DAMAGED = 'damaged_checkpoints'  # next to `checkpoints/`: set aside, never deleted
OUT_OF_SPACE = {errno.ENOSPC: 'No space left on device', errno.EDQUOT: 'Disk quota exceeded',
                errno.EFBIG: 'File too large'}


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (disk full); the older ones are intact."""

    exit_code = 1


class CheckpointReadError(UserError):
    """No checkpoint of the workdir can be restored into this run's state."""


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
        with self._out_of_space_reported():  # the previous asynchronous save's error lands here
            started = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
        if started:
            self._saved_step = step
        return started

    def restore(self, abstract_state: Any, data_iterator: Any | None,
                step: int | None = None) -> Any:
        """Restore the state (shardings from `abstract_state`) and, in place, the iterator: from
        `step`, or from the newest checkpoint that reads (unreadable newer ones are set aside)."""
        steps = [step] if step is not None else sorted(self.manager.all_steps(), reverse=True)
        unreadable = []
        for candidate in steps:
            try:
                state = self._restore_step(candidate, abstract_state, data_iterator)
            except UserError:
                raise
            except Exception as e:  # noqa: BLE001  Orbax/TensorStore/JSON errors of a bad file
                unreadable.append((candidate, e))
                continue
            if unreadable:
                self._set_aside(unreadable, candidate)
            return state
        first, error = unreadable[0]
        raise CheckpointReadError(
            f'cannot restore checkpoint step {first} in {self.directory} '
            f'({describe(error)})'
            + (f', nor any of the older steps {[s for s, _ in unreadable[1:]]}'
               if len(unreadable) > 1 else '')
            + '. If the config changed since the checkpoint was written, restore it or use a new '
            '--workdir')

    def _restore_step(self, step: int, abstract_state: Any, data_iterator: Any | None) -> Any:
        items = {'state': ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            _check_data_processes(self.directory / str(step) / 'data', step)
            items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
        return self.manager.restore(step, args=ocp.args.Composite(**items))['state']

    def _set_aside(self, unreadable: list[tuple[int, Exception]], resumed: int) -> None:
        """Move unreadable checkpoints to `damaged_checkpoints/` (process 0), so that the run
        can write those steps again; they are kept for inspection, never deleted."""
        damaged = self.directory.parent / DAMAGED
        for step, error in unreadable:
            target = damaged / str(step)
            if jax.process_index() == 0:
                damaged.mkdir(exist_ok=True)
                suffix = 1
                while target.exists():
                    target, suffix = damaged / f'{step}.{suffix}', suffix + 1
                shutil.move(self.directory / str(step), target)
            log.warning('checkpoint step %d in %s is unreadable (%s: %s); moved it to %s and '
                        'resumed from step %d', step, self.directory, type(error).__name__,
                        first_line(error), target, resumed)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices('gsvit_jax damaged checkpoints set aside')
        self.manager.reload()

    @contextlib.contextmanager
    def _out_of_space_reported(self) -> Iterator[None]:
        """A write that fails for lack of space ends the run with one line (the temporary
        directory Orbax was writing is removed; the finished checkpoints are not touched)."""
        try:
            yield
        except Exception as e:  # noqa: BLE001  OSError, or TensorStore's ValueError with errno text
            reason = _out_of_space(e)
            if reason is None:
                raise
            if jax.process_index() == 0:
                for partial in self.directory.glob('*.orbax-checkpoint-tmp*'):
                    shutil.rmtree(partial, ignore_errors=True)
            kept = sorted(s for s in self.manager.all_steps() if (self.directory / str(s)).is_dir())
            raise CheckpointWriteError(
                f'could not write checkpoint step {self._saved_step} in {self.directory}: '
                f'{reason}. The older checkpoints are intact (steps {kept}); free space, then '
                'rerun the same command to resume') from e

    def wait(self) -> None:
        with self._out_of_space_reported():
            self.manager.wait_until_finished()

    def close(self) -> None:
        with self._out_of_space_reported():
            self.manager.wait_until_finished()
        self.manager.close()


def _out_of_space(error: BaseException) -> str | None:
    """'No space left on device' (or quota, file size limit) if that is why `error` happened,
    anywhere in its chain of causes."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in OUT_OF_SPACE:
            return OUT_OF_SPACE[error.errno]
        for text in OUT_OF_SPACE.values():
            if text.lower() in str(error).lower():
                return text
        error = error.__cause__ or error.__context__
    return None


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
