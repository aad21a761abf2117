"""`experiments/pretrain.py` with bad input: one line naming the culprit, exit status 2, no
traceback, and nothing written, all before any data is prepared."""
import os
import pathlib
import subprocess
import sys

import pytest

from xla_env import xla_flags

ROOT = pathlib.Path(__file__).parents[1]
CONFIG = 'experiments/configs/pretrain.py'

CASES = {  # arguments -> words the error line must contain
    'missing config file': (['--config=experiments/configs/absent.py'],
                            ['--config', 'absent.py']),
    'missing config file, split flag': (['--config', 'experiments/configs/absent.py:demo'],
                                        ['--config', 'absent.py']),
    'batch size 0': ([f'--config={CONFIG}:runlocal', '--config.batch_size=0'],
                     ['batch_size=0', 'positive']),
    'unknown dataset': ([f'--config={CONFIG}:runlocal', '--config.data.name=nonexistent'],
                        ["data.name='nonexistent'", 'no such dataset', 'gensurgery']),
    'dataset the demo ignores': ([f'--config={CONFIG}:demo', '--config.data.name=cholec80'],
                                 ["data.name='cholec80'", 'demo']),
    'dataset not prepared': ([f'--config={CONFIG}', '--config.data.data_dir={tmp}/no_data'],
                             ["data.name='gensurgery'", 'not prepared', 'no_data']),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_bad_input_ends_in_one_line(case, tmp_path):
    args, words = CASES[case]
    workdir = tmp_path / 'run'
    command = [sys.executable, 'experiments/pretrain.py',
               *(a.replace('{tmp}', str(tmp_path)) for a in args), f'--workdir={workdir}']
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, 'XLA_FLAGS': xla_flags(1)})
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith('pretrain: error: ')]
    assert len(errors) == 1, out.stderr[-2000:]
    assert all(word in errors[0] for word in words), errors[0]
    assert 'Traceback' not in out.stderr + out.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no workdir, no dataset folder
