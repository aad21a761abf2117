"""What a user meets on a cluster ends in one line naming the problem (exit status 2 for a
mistake), never a traceback or a hang."""
import os
import subprocess
import sys
import time

import pytest

from gsvit_jax.errors import UserError
from gsvit_jax.train.checkpointing import _check_data_processes
from multiprocess import ROOT, free_port, launch
from xla_env import xla_flags

CONFIG = ROOT / 'experiments' / 'configs' / 'pretrain.py'


def args(workdir, *extra):
    return [str(ROOT / 'experiments' / 'pretrain.py'), f'--config={CONFIG}:runlocal',
            f'--workdir={workdir}', *extra]


def single(workdir, *extra, timeout=120):
    env = {**os.environ, 'XLA_FLAGS': xla_flags(2)}
    return subprocess.run([sys.executable, *args(workdir, *extra)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line(output: str, *words: str) -> None:
    lines = [l for l in output.splitlines() if l.startswith('pretrain: error:')]
    assert len(lines) == 1, output[-3000:]
    for word in words:
        assert word in lines[0], lines[0]
    assert 'Traceback' not in output, output[-3000:]


def test_batch_not_divisible_by_the_processes(tmp_path):
    run = launch(args(tmp_path / 'w', '--config.batch_size=3'), tmp_path / 'logs')
    assert run.wait(240) == [2, 2], run.tails()
    for i in range(2):
        assert_one_line(run.log(i), 'batch_size=3', 'not divisible by the 2 processes')
    assert not (tmp_path / 'w').exists()  # stopped before writing anything


def test_batch_not_divisible_by_all_devices(tmp_path):
    run = launch(args(tmp_path / 'w', '--config.batch_size=6'), tmp_path / 'logs')
    assert run.wait(240) == [2, 2], run.tails()
    assert_one_line(run.log(0), 'batch_size=6', 'not divisible by the 4 devices')


def test_hosts_with_different_configs_are_refused(tmp_path):
    run = launch(args(tmp_path / 'w'), tmp_path / 'logs', extra={1: ['--config.seed=1']})
    assert run.wait(240) == [2, 2], run.tails()
    for i in range(2):
        assert_one_line(run.log(i), 'processes [1]', 'different config')


def test_unreachable_coordinator_times_out_with_one_line(tmp_path):
    port = free_port()  # nobody listens: process 0 of this run never starts
    out = single(tmp_path / 'w', f'--config.distributed.coordinator=localhost:{port}',
                 '--config.distributed.num_processes=2', '--config.distributed.process_id=1',
                 '--config.distributed.timeout_s=3')
    assert out.returncode == 2, out.stderr[-3000:]
    assert_one_line(out.stderr, f'process 1 of 2 could not join the run at localhost:{port}',
                    'within 3 s')


def test_incomplete_or_wrong_settings_are_named(tmp_path):
    out = single(tmp_path / 'w', '--config.distributed.coordinator=localhost:1234')
    assert out.returncode == 2
    assert_one_line(out.stderr, 'distributed.num_processes, process_id')
    out = single(tmp_path / 'w', '--config.distributed.coordinator=localhost',
                 '--config.distributed.num_processes=2', '--config.distributed.process_id=0')
    assert out.returncode == 2
    assert_one_line(out.stderr, "coordinator='localhost'", 'host:port')
    out = single(tmp_path / 'w', '--config.distributed.coordinator=localhost:1234',
                 '--config.distributed.num_processes=2', '--config.distributed.process_id=2')
    assert out.returncode == 2
    assert_one_line(out.stderr, 'process_id=2', '0..1')


def test_cluster_tasks_without_a_multiprocess_config_are_refused(tmp_path):
    """`srun` with 2 tasks but no `multihost`: task 1 stops at once (it would be a second,
    independent run in the same workdir); task 0 is warned and would train alone."""
    run = launch(args(tmp_path / 'w'), tmp_path / 'logs', mode='slurm')
    assert run.processes[1].wait(240) == 2, run.tails()
    assert_one_line(run.log(1), 'task 1 of 2', 'multihost')
    deadline = time.time() + 120
    while 'trains alone' not in run.log(0):
        assert time.time() < deadline and run.processes[0].poll() is None, run.tails()
        time.sleep(0.5)
    run.kill()


def test_resuming_with_another_process_count_is_refused(tmp_path):
    """The data position is saved per process: a 2-process checkpoint in a 1-process run."""
    data = tmp_path / 'checkpoints' / '30' / 'data'
    data.mkdir(parents=True)
    for i in range(2):
        (data / f'process_{i}-of-2.json').write_text('{}')
    with pytest.raises(UserError, match='step 30 .* written by 2 process.*this run has 1'):
        _check_data_processes(data, 30)
