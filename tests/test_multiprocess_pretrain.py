"""Pre-training in several processes (2 processes x 2 CPU devices, gloo) equals one process with 4
devices; killed processes resume exactly; a dead process stops the others with a message."""
import json
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from gsvit_jax.train.init import restore_locally
from multiprocess import ROOT, launch
from xla_env import xla_flags

CONFIG = ROOT / 'experiments' / 'configs' / 'pretrain.py'
STEPS = 6
TINY = ['--config.total_steps=6', '--config.log_every_steps=1', '--config.image_every_steps=3',
        '--config.eval_every_steps=3', '--config.checkpoint.every_steps=3',
        '--config.optimizer.eps=1e-3']  # see test_pretrain: Adam turns rounding noise into steps
TIMEOUT = 900


def pretrain_args(workdir, *extra, arg='runlocal'):
    return [str(ROOT / 'experiments' / 'pretrain.py'), f'--config={CONFIG}:{arg}',
            f'--workdir={workdir}', *TINY, *extra]


def losses(workdir) -> dict[int, float]:
    rows = [json.loads(l) for l in (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines()]
    return {r['step']: r['train/loss'] for r in rows if 'train/loss' in r}


def restore(workdir, step=STEPS):
    """The saved train state, whatever devices saved it, on this process's first device."""
    return restore_locally(pathlib.Path(workdir) / 'checkpoints' / str(step) / 'state')


@pytest.fixture(scope='module')
def one_process(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('one_process')
    env = {'XLA_FLAGS': xla_flags(4)}
    import os
    out = subprocess.run([sys.executable, *pretrain_args(workdir)], env={**os.environ, **env},
                         cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return workdir


@pytest.fixture(scope='module')
def two_processes(tmp_path_factory):
    """Started as on two machines: coordinator address, process count and id as flags."""
    workdir = tmp_path_factory.mktemp('two_processes')
    run = launch(pretrain_args(workdir), workdir / 'logs')
    run.check(TIMEOUT)
    return workdir, run


def test_two_processes_equal_one_process(one_process, two_processes):
    """Same data, same steps. Not bit for bit: the cross-device sums (gradients, BatchNorm
    statistics) run in another order over gloo than inside one process, so even the first loss
    may differ in its last bits (measured: 1.3e-7 relative), and training amplifies those float32
    roundings step by step (measured: loss 2e-5 relative at step 6, parameters 2e-4). A wrong
    split of the data would change the losses from step 1 at the 1e-2 level."""
    workdir, run = two_processes
    assert 'devices: 4 x cpu, processes: 2' in run.log(0)
    a, b = losses(one_process), losses(workdir)
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))  # logged once, by process 0
    assert abs(a[1] - b[1]) <= 1e-6 * a[1]  # the first step sees identical batches and weights
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-4 * abs(a[step]), (step, a[step], b[step])
    one, two = restore(one_process), restore(workdir)
    assert int(one['step']) == int(two['step']) == STEPS
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(one)]
    assert paths == [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(two)]
    worst = max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
                for x, y in zip(jax.tree_util.tree_leaves(one['params']),
                                jax.tree_util.tree_leaves(two['params'])))
    assert worst <= 2e-3, worst
    # the data position: 6 global batches of 16 read; each process read its 8 of each (Grain
    # numbers process i's j-th record j * 2 + i)
    position = json.loads(next((one_process / 'checkpoints' / str(STEPS) / 'data').glob(
        '*.json')).read_text())['last_seen_indices']
    assert position == {'0': STEPS * 16 - 1}
    for i in range(2):
        state = json.loads((workdir / 'checkpoints' / str(STEPS) / 'data' /
                            f'process_{i}-of-2.json').read_text())
        assert state['last_seen_indices'] == {'0': (STEPS * 8 - 1) * 2 + i}


def test_outputs_are_written_once_by_process_0(two_processes):
    workdir, _ = two_processes
    assert sorted(p.name for p in (workdir / 'images').glob('*.png')) == [
        'step_0000003.png', 'step_0000006.png']
    assert len(list((workdir / 'tensorboard').glob('events.out.tfevents.*'))) == 1
    rows = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in rows if 'eval/loss' in r] == [3, 6]
    assert sorted((workdir / 'checkpoints' / str(STEPS) / 'data').glob('process_*')) == [
        workdir / 'checkpoints' / str(STEPS) / 'data' / f'process_{i}-of-2.json' for i in range(2)]


def test_a_hung_process_stops_the_other_and_a_restart_resumes_exactly(two_processes, tmp_path):
    """Started as a SLURM job step. Process 1 is frozen (SIGSTOP) after the step-3 checkpoint: no
    collective fails (its connections stay open), so only the peer watch can notice. Process 0
    stops by itself with one line naming process 1; both are then killed, and the job, rerun,
    resumes bit for bit. (A SIGKILLed process is usually reported at once by the failed
    collective, with the same line; the watch is what catches the rest.)"""
    expected, _ = two_processes
    workdir = tmp_path / 'run'
    args = pretrain_args(workdir, '--config.distributed.peer_timeout_s=12',
                         arg='runlocal,multihost')
    run = launch(args, tmp_path / 'logs_1', mode='slurm')
    deadline = time.time() + TIMEOUT
    while not (workdir / 'checkpoints' / '3').is_dir():  # finalised: Orbax renames when complete
        assert all(p.poll() is None for p in run.processes), run.tails()
        assert time.time() < deadline, run.tails()
        time.sleep(0.2)
    run.processes[1].send_signal(signal.SIGSTOP)
    stopped_at = time.time()
    try:
        code = run.processes[0].wait(90)  # the watch fires after 12 s; gloo's own timeout is 30 s
    finally:
        run.kill()
    assert code == 1, run.tails()
    assert time.time() - stopped_at < 60
    log = run.log(0)
    assert ('pretrain: error: process 0 lost contact with another process of the run (process 1 '
            'gave no sign of life for ') in log, run.tails()
    assert 'restart all processes to resume from checkpoint step ' in log
    assert 'Traceback' not in log

    launch(args, tmp_path / 'logs_2', mode='slurm').check(TIMEOUT)
    a, b = restore(expected), restore(workdir)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)  # parameters, BatchNorm statistics, Adam, step
    for step in (4, 5, 6):
        assert losses(expected)[step] == losses(workdir)[step]
