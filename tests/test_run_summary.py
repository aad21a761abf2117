"""How a pre-training run ends: a summary of its final metrics and where its outputs are, and a
rerun of a finished run says so in one line instead of compiling and evaluating again."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np

from gsvit_jax.train.checkpointing import Checkpointer
from gsvit_jax.train.summary import last_metrics, run_summary
from xla_env import xla_flags

ROOT = pathlib.Path(__file__).parents[1]


def finished_workdir(workdir: pathlib.Path) -> pathlib.Path:
    """What a 20-step run leaves: metrics, two pictures, TensorBoard logs, a checkpoint."""
    rows = [{'step': 10, 'train/loss': 0.5, 'train/psnr': 11.0},
            {'step': 20, 'train/loss': 0.25, 'train/psnr': 14.5, 'train/lr': 1e-4},
            {'step': 20, 'eval/loss': 0.3, 'eval/psnr': 13.25}]
    workdir.mkdir()
    (workdir / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    (workdir / 'images').mkdir()
    for step in (10, 20):
        (workdir / 'images' / f'step_{step:07d}.png').write_bytes(b'png')
    (workdir / 'tensorboard').mkdir()
    checkpointer = Checkpointer(workdir, async_save=False)
    checkpointer.save(20, {'w': np.zeros(2, np.float32)}, None, force=True)
    checkpointer.close()
    return workdir


def test_summary_names_metrics_files_and_the_tensorboard_command(tmp_path):
    workdir = finished_workdir(tmp_path / 'run')
    assert last_metrics(workdir) == {'train': {'step': 20, 'loss': 0.25, 'psnr': 14.5, 'lr': 1e-4},
                                     'eval': {'step': 20, 'loss': 0.3, 'psnr': 13.25}}
    lines = run_summary(workdir, {'step': 20, 'loss': 0.25}).splitlines()
    assert lines[0].startswith(f'pre-training finished at step 20 in {workdir}')
    assert lines[1] == '  train metrics (step 20): loss 0.25, psnr 14.5 dB, lr 0.0001'
    assert lines[2] == '  eval metrics (step 20): loss 0.3, psnr 13.25 dB'
    assert lines[3] == f'  checkpoints: {workdir / "checkpoints"} (steps 20)'
    assert lines[4].startswith(f'  metrics: {workdir / "metrics.jsonl"}')
    assert lines[5] == (f'  predictions: {workdir / "images" / "step_0000020.png"} and 1 earlier '
                        '(columns: input | predicted | target | error x4)')
    assert lines[6].endswith(f'tensorboard --logdir {workdir / "tensorboard"}')


def test_summary_counts_the_skipped_records(tmp_path):
    workdir = finished_workdir(tmp_path / 'run')
    (workdir / 'skipped_records.jsonl').write_text(''.join(
        json.dumps({'record': name, 'error': 'OSError'}) + '\n' for name in ('a@1.00s', 'b@2.00s',
                                                                           'a@1.00s')))
    lines = run_summary(workdir, {'step': 20}).splitlines()
    assert (f'  skipped: 2 frame pairs that do not decode, listed in '
            f'{workdir / "skipped_records.jsonl"}') in lines


def test_a_finished_run_rerun_says_it_is_complete(tmp_path):
    workdir = finished_workdir(tmp_path / 'run')
    command = [sys.executable, str(ROOT / 'experiments' / 'pretrain.py'),
               f'--config={ROOT / "experiments" / "configs" / "pretrain.py"}:runlocal',
               f'--workdir={workdir}']
    result = subprocess.run(command, env={**os.environ, 'XLA_FLAGS': xla_flags(1)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    first, *rest = result.stdout.splitlines()
    assert first.startswith(f'{workdir} is already trained to step 20 of 20; nothing to do')
    assert f'tensorboard --logdir {workdir / "tensorboard"}' in rest[-1]
    assert 'pre-training' not in result.stderr  # no progress bar: nothing was trained
    assert Checkpointer(workdir).latest_step() == 20
