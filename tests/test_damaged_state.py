"""Damaged state: a corrupted newest checkpoint, a disk that fills during a save, a second run in
the same workdir. Each is survived or refused with one clear message, and nothing is lost."""
import logging
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

from gsvit_jax.train.checkpointing import (DAMAGED, CheckpointReadError, Checkpointer,
                                           abstract_like)
from gsvit_jax.workdir_lock import WorkdirBusyError, workdir_lock

ROOT = pathlib.Path(__file__).parents[1]


def state(step: int) -> dict:
    return {'w': jnp.full((64,), float(step)), 'step': jnp.asarray(step)}


def saved(workdir, steps) -> Checkpointer:
    checkpointer = Checkpointer(workdir, keep=10, every_steps=1, async_save=False)
    for step in steps:
        checkpointer.save(step, state(step), None)
    checkpointer.wait()
    return checkpointer


def truncate_files(directory: pathlib.Path) -> int:
    """Cut every file under `directory` to half its length (a copy or disk that failed)."""
    files = [p for p in directory.rglob('*') if p.is_file() and p.stat().st_size]
    for path in files:
        os.truncate(path, path.stat().st_size // 2)
    return len(files)


def test_unreadable_newest_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(
        tmp_path, caplog):
    saved(tmp_path, (1, 2, 3)).close()
    assert truncate_files(tmp_path / 'checkpoints' / '3') > 0
    checkpointer = Checkpointer(tmp_path, keep=10, every_steps=1, async_save=False)
    with caplog.at_level(logging.WARNING):
        restored = checkpointer.restore(abstract_like(state(0)), None)
    assert int(restored['step']) == 2 and np.all(np.asarray(restored['w']) == 2.0)
    warning = next(r.getMessage() for r in caplog.records
                   if r.name == 'gsvit_jax.train.checkpointing')
    assert 'step 3' in warning and f'{DAMAGED}/3' in warning and 'resumed from step 2' in warning
    assert (tmp_path / DAMAGED / '3').is_dir()  # kept for inspection, not deleted
    assert sorted(checkpointer.manager.all_steps()) == [1, 2]
    checkpointer.save(3, state(3), None)  # the run can write step 3 again
    checkpointer.close()
    assert Checkpointer(tmp_path).latest_step() == 3


def test_two_damaged_checkpoints_are_both_kept_and_the_oldest_good_one_restored(tmp_path):
    saved(tmp_path, (1, 2, 3)).close()
    for step in (2, 3):
        truncate_files(tmp_path / 'checkpoints' / str(step))
    restored = Checkpointer(tmp_path).restore(abstract_like(state(0)), None)
    assert int(restored['step']) == 1
    assert sorted(p.name for p in (tmp_path / DAMAGED).iterdir()) == ['2', '3']


def test_no_readable_checkpoint_is_an_error_that_moves_nothing(tmp_path):
    saved(tmp_path, (1, 2)).close()
    with pytest.raises(CheckpointReadError, match=r'cannot restore checkpoint step 2 .* older steps '
                                                  r'\[1\].*config changed'):
        wrong_shape = {'w': jnp.zeros((65,)), 'step': jnp.asarray(0)}  # the config changed
        Checkpointer(tmp_path).restore(abstract_like(wrong_shape), None)
    assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit()) == [
        '1', '2']
    assert not (tmp_path / DAMAGED).exists()


DISK_FULL = textwrap.dedent('''
    import resource, signal, sys
    import jax.numpy as jnp, numpy as np
    from gsvit_jax.errors import UserError
    from gsvit_jax.train.checkpointing import Checkpointer
    checkpointer = Checkpointer(sys.argv[1], keep=5, every_steps=1, async_save=True)
    checkpointer.save(1, {'w': jnp.ones(16)}, None)
    checkpointer.wait()
    # the file system refuses writes beyond 200 kB from here on: a disk that is now full
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
    noise = np.random.default_rng(0).random(250_000, dtype=np.float32)  # 1 MB, incompressible
    try:
        checkpointer.save(2, {'w': jnp.asarray(noise)}, None)
        checkpointer.close()
    except UserError as e:
        print('ERROR', e)
        sys.exit(e.exit_code)
''')


def test_disk_full_during_an_asynchronous_save_is_one_error_and_older_checkpoints_are_intact(
        tmp_path):
    out = subprocess.run([sys.executable, '-c', DISK_FULL, str(tmp_path)], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 1, out.stdout + out.stderr[-3000:]
    assert ('ERROR could not write checkpoint step 2 in ' f'{tmp_path}/checkpoints: File too large. '
            'The older checkpoints are intact (steps [1])') in out.stdout
    assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == ['1']  # partial removed
    restored = Checkpointer(tmp_path).restore(abstract_like({'w': jnp.zeros(16)}), None)
    np.testing.assert_array_equal(restored['w'], np.ones(16))


HOLD_LOCK = textwrap.dedent('''
    import sys, time
    from gsvit_jax.workdir_lock import workdir_lock
    with workdir_lock(sys.argv[1]):
        print('locked', flush=True)
        time.sleep(600)
''')


def test_second_run_in_a_workdir_is_refused_and_a_killed_run_leaves_no_stuck_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, '-c', HOLD_LOCK, str(tmp_path)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        with pytest.raises(WorkdirBusyError, match=rf'{tmp_path} is in use by process '
                                                   rf'{holder.pid} on .*another --workdir'):
            with workdir_lock(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with workdir_lock(tmp_path):  # the kernel released the dead run's lock
        with pytest.raises(WorkdirBusyError, match=rf'process {os.getpid()} '):
            with workdir_lock(tmp_path):  # and a second one in this very process is refused too
                pass
