"""Orbax checkpoints of the whole training state plus the Grain iterator position.

Saves are asynchronous and atomic (Orbax writes to a temporary directory and renames it when
complete), so a crash or SIGKILL mid-save leaves the previous checkpoints as they were; restore
picks the newest complete one.
"""
from __future__ import annotations

import pathlib
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Keep-N asynchronous checkpoints of {'state', 'data'} under `<workdir>/checkpoints`."""

    def __init__(self, workdir: str | pathlib.Path, *, keep: int = 3, every_steps: int = 1000,
                 async_save: bool = True):
        self.directory = pathlib.Path(workdir).absolute() / 'checkpoints'
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=every_steps, create=True,
            enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=('state', 'data'))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_iterator: Any | None, *, force: bool = False) -> bool:
        """Save if `step` is due (or `force`); returns whether a save started."""
        items = {'state': ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items['data'] = grain.checkpoint.CheckpointSave(data_iterator)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, abstract_state: Any, data_iterator: Any | None,
                step: int | None = None) -> Any:
        """Restore the state (shardings from `abstract_state`) and, in place, the iterator."""
        step = self.latest_step() if step is None else step
        items = {'state': ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored['state']

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of a pytree of arrays, the restore target."""
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)
