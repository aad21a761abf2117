"""Model variables in Orbax checkpoints: read from a training workdir or a `from-torch` output
(the optimizer state never read), written as a step-0 checkpoint for `--config.init_from`."""
from __future__ import annotations

import pathlib
import shutil
import tempfile
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from gsvit_jax.convert.state_dict import COLLECTIONS, ConvertError

ITEMS = ('variables', 'state')  # from-torch outputs, training checkpoints


def checkpoint_directory(path: pathlib.Path) -> pathlib.Path:
    """The CheckpointManager root: `<workdir>/checkpoints`, else `path` (a from-torch output)."""
    if not path.exists():
        raise ConvertError(f'no checkpoint at {path}')
    if not path.is_dir():
        raise ConvertError(f'{path} is a file; expected a checkpoint directory (a training '
                           'workdir, its checkpoints/ folder or a from-torch output)')
    return path / 'checkpoints' if (path / 'checkpoints').is_dir() else path


def read_variables(path: str | pathlib.Path, step: int | None = None) -> tuple[dict[str, Any], int]:
    """{'params', 'batch_stats'} as numpy arrays from `step` (default: the newest) of a checkpoint,
    and that step. Training states are restored partially: the optimizer state is never read."""
    directory = checkpoint_directory(pathlib.Path(path).absolute())
    handlers = {name: ocp.PyTreeCheckpointHandler() for name in ITEMS}
    with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True),
                               item_handlers=handlers) as manager:
        steps = sorted(manager.all_steps())
        if not steps:
            raise ConvertError(f'no checkpoint steps under {directory}; give a training workdir, '
                               'its checkpoints/ folder or a from-torch output (and --step N)')
        step = steps[-1] if step is None else step
        if step not in steps:
            raise ConvertError(f'no step {step} under {directory}; steps: {steps}')
        metadata = manager.item_metadata(step)
        name = next((n for n in ITEMS if metadata.get(n) is not None), None)
        tree = metadata[name].tree if name else {}
        if 'params' not in tree:
            raise ConvertError(f'step {step} under {directory} holds no model variables '
                               f'(expected an item {" or ".join(ITEMS)} with params)')
        wanted = {c: tree[c] for c in COLLECTIONS if c in tree}
        target = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), wanted)
        restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                                              wanted)
        item = ocp.args.PyTreeRestore(target, restore_args, partial_restore=True)
        restored = manager.restore(step, args=ocp.args.Composite(**{name: item}))
    return dict(restored[name]), step


def write_variables(variables: Mapping[str, Any], outdir: pathlib.Path) -> None:
    """Orbax checkpoint of `variables` (item `variables`, step 0) at `outdir`, replacing it.

    Written into a temporary folder beside `outdir` and renamed into place when complete.
    """
    outdir.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(dir=outdir.parent, prefix=f'.{outdir.name}.'))
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would make the output private
        options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
        with ocp.CheckpointManager(staging, options=options, item_names=('variables',)) as manager:
            manager.save(0, args=ocp.args.Composite(variables=ocp.args.StandardSave(variables)))
        if outdir.exists():
            shutil.rmtree(outdir)
        staging.rename(outdir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def count_parameters(variables: Mapping[str, Any]) -> int:
    """How many numbers `params` holds (BatchNorm statistics not counted)."""
    return sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(variables.get('params', {})))
