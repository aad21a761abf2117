"""Pre-training: data parallel = single device, falling loss, NaN stop, exact resume after SIGKILL
(once, and 8 times at random moments)."""
import json
import os
import pathlib
import re
import runpy
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gsvit_jax.data.loader import make_loader
from gsvit_jax.data.pretrain_data import pair_source
from gsvit_jax.data.sharding import batch_sharding, data_mesh, replicated, shard_batch
from gsvit_jax.data.transforms import DecodePair, SelectFields
from gsvit_jax.pretrain import build_model, initial_variables
from gsvit_jax.train.checkpointing import Checkpointer
from gsvit_jax.train.optimizers import make_optimizer
from gsvit_jax.train.pretrain_step import make_train_step
from gsvit_jax.train.state import create_train_state
from chaos import TEMPORARY, complete_steps, run_with_kills
from xla_env import xla_flags

ROOT = pathlib.Path(__file__).parents[1]
CONFIG = ROOT / 'experiments' / 'configs' / 'pretrain.py'


def runlocal_config(**overrides):
    config = runpy.run_path(str(CONFIG))['get_config']('runlocal')
    config.update(overrides)
    return config


def read_rows(workdir) -> dict[int, dict]:
    """step -> last logged train metrics (a resumed run may log a step twice)."""
    rows = {}
    for line in (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines():
        row = json.loads(line)
        if 'train/loss' in row:
            rows[row['step']] = row
    return rows


def restore_raw(workdir, step):
    with ocp.CheckpointManager(pathlib.Path(workdir) / 'checkpoints',
                               options=ocp.CheckpointManagerOptions(read_only=True),
                               item_names=('state', 'data')) as manager:
        return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))


@pytest.fixture(scope='module')
def step_setup():
    """One config, model, initial state and batch; `jitted(devices)` compiles a step once per
    device count, so the tests below share the 1-device program."""
    config = runlocal_config()
    config.model.remat = True  # as full-size pre-training runs: recomputation under sharding
    # Adam's first update is ~lr * g / (|g| + eps): it maps pure rounding noise to +-lr steps for
    # parameters whose true gradient is 0 (conv biases right before a BatchNorm, in the decoder),
    # and that noise differs between 1 and 8 partial sums. eps=1e-3 keeps such updates ~0 while
    # real gradients still move the parameters, so the comparison is about what data parallelism
    # must get right: gradients averaged and BatchNorm statistics taken over the global batch.
    config.optimizer.eps = 1e-3
    model = build_model(config)
    tx, schedule = make_optimizer(config.optimizer, config.total_steps)
    state = create_train_state(initial_variables(model, config), tx, 0)
    source = pair_source(config.data, 'train', '/unused')
    batch = next(iter(make_loader(source, [DecodePair(64), SelectFields(('frame', 'next_frame'))],
                                  global_batch_size=16, seed=0)))
    steps = {}

    def jitted(devices):
        mesh = data_mesh(devices)
        if len(devices) not in steps:
            steps[len(devices)] = jax.jit(
                make_train_step(model, tx, schedule),
                in_shardings=(replicated(mesh), batch_sharding(mesh)),
                out_shardings=(replicated(mesh), replicated(mesh)))
        return steps[len(devices)], mesh

    return state, batch, jitted


def test_one_step_on_8_devices_equals_one_device(step_setup):
    state, batch, jitted = step_setup
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        step, mesh = jitted(devices)
        new_state, metrics = step(jax.device_put(state, replicated(mesh)), shard_batch(batch, mesh))
        results.append((jax.device_get(new_state), jax.device_get(metrics)))
    (one, m1), (eight, m8) = results
    assert len(jax.devices()) == 8
    assert abs(m1['loss'] - m8['loss']) <= 1e-6
    for a, b in zip(jax.tree_util.tree_leaves(one.params), jax.tree_util.tree_leaves(eight.params)):
        assert np.abs(a - b).max() <= 1e-5
    for a, b in zip(jax.tree_util.tree_leaves(one.batch_stats),
                    jax.tree_util.tree_leaves(eight.batch_stats)):  # global-batch statistics
        assert np.abs(a - b).max() <= 1e-5


def test_non_finite_step_leaves_the_whole_state_unchanged(step_setup):
    state, batch, jitted = step_setup
    step, mesh = jitted(jax.devices()[:1])
    state, metrics = step(jax.device_put(state, replicated(mesh)), shard_batch(batch, mesh))
    assert metrics['finite'] == 1 and int(state.step) == 1  # Adam moments are non-zero now
    params = jax.tree_util.tree_map(np.array, state.params)
    params['decoder']['conv5']['bias'][0] = np.nan  # NaN loss and gradients
    poisoned = jax.device_get(state.replace(params=params))
    new_state, metrics = step(jax.device_put(poisoned, replicated(mesh)), shard_batch(batch, mesh))
    assert metrics['finite'] == 0 and not np.isfinite(metrics['loss'])
    for a, b in zip(jax.tree_util.tree_leaves(poisoned), jax.tree_util.tree_leaves(new_state)):
        np.testing.assert_array_equal(a, b)  # params, BatchNorm statistics, Adam state, step


def pretrain_command(workdir, *overrides) -> list[str]:
    return [sys.executable, str(ROOT / 'experiments' / 'pretrain.py'),
            f'--config={CONFIG}:runlocal', f'--workdir={workdir}',
            '--config.checkpoint.every_steps=5', '--config.checkpoint.async_save=False',
            *overrides]


ENV = {**os.environ, 'XLA_FLAGS': xla_flags(2)}


def run_pretrain(workdir, *overrides, wait=True):
    process = subprocess.Popen(pretrain_command(workdir, *overrides), env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output[-3000:]
    return process


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('uninterrupted')
    run_pretrain(workdir)
    return workdir


def test_loss_falls_and_outputs_are_written(uninterrupted):
    rows = read_rows(uninterrupted)
    steps = sorted(rows)
    assert steps[-1] == 20
    assert rows[steps[-1]]['train/loss'] < 0.75 * rows[steps[0]]['train/loss']
    assert sorted(p.name for p in (uninterrupted / 'images').glob('*.png')) == [
        'step_0000010.png', 'step_0000020.png']
    assert list((uninterrupted / 'tensorboard').glob('events.out.tfevents.*'))
    evals = [json.loads(l) for l in (uninterrupted / 'metrics.jsonl').read_text().splitlines()
             if 'eval/loss' in l]
    assert [e['step'] for e in evals] == [10, 20]


def test_eight_sigkills_at_random_moments_then_bit_identical(uninterrupted, tmp_path):
    """Chaos: a run with asynchronous checkpoints every second step is SIGKILLed 8 times (seeded:
    mid-save, or a random delay after a checkpoint) and restarted each time; it ends exactly where
    the uninterrupted run ended, with every checkpoint readable."""
    workdir = tmp_path / 'chaos'
    command = pretrain_command(workdir, '--config.checkpoint.every_steps=2',
                               '--config.checkpoint.async_save=True')
    hits = run_with_kills(command, ENV, workdir / 'checkpoints', kills=8, seed=3,
                          log=tmp_path / 'log.txt')
    assert len(hits) == 8 and any(hit.startswith('writing') for hit in hits), hits
    assert not list((workdir / 'checkpoints').glob(TEMPORARY))
    for step in complete_steps(workdir / 'checkpoints'):
        restore_raw(workdir, step)  # every checkpoint left behind reads
    expected, resumed = restore_raw(uninterrupted, 20), restore_raw(workdir, 20)
    for a, b in zip(jax.tree_util.tree_leaves(expected['state']),
                    jax.tree_util.tree_leaves(resumed['state'])):
        np.testing.assert_array_equal(a, b)  # parameters, optimiser state, step
    data = sorted((uninterrupted / 'checkpoints' / '20' / 'data').glob('process_*.json'))
    assert data and [p.read_text() for p in data] == [  # the same position in the data
        (workdir / 'checkpoints' / '20' / 'data' / p.name).read_text() for p in data]


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(uninterrupted, tmp_path):
    """A finished 20-step run continued with lr = inf: the first step is non-finite, the run
    stops with one line naming it and the last good checkpoint, and writes nothing after it."""
    workdir = tmp_path / 'run'
    shutil.copytree(uninterrupted, workdir)
    good = restore_raw(workdir, 20)['state']['params']
    process = run_pretrain(workdir, '--config.total_steps=30', '--config.optimizer.lr=inf',
                           '--config.optimizer.end_lr=inf', wait=False)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 1, output[-3000:]
    assert re.search(r'non-finite loss or gradient at step 21 .*checkpoint is step 20', output)
    assert 'Traceback' not in output
    assert Checkpointer(workdir).latest_step() == 20
    kept = restore_raw(workdir, 20)['state']['params']
    for a, b in zip(jax.tree_util.tree_leaves(good), jax.tree_util.tree_leaves(kept)):
        np.testing.assert_array_equal(a, b)
        assert np.isfinite(a).all()


def test_resume_needs_neither_initialisation_nor_the_init_from_file(uninterrupted, tmp_path):
    """A restart restores into shapes alone: the weights it started from may be gone by then.
    (Resumed at step 15 of the finished run: the same programs, so the persistent compilation
    cache serves them.)"""
    workdir = tmp_path / 'run'
    shutil.copytree(uninterrupted, workdir)
    shutil.rmtree(workdir / 'checkpoints' / '20')
    run_pretrain(workdir, f'--config.init_from={tmp_path / "deleted" / "GSViT.pkl"}')
    assert Checkpointer(workdir).latest_step() == 20
    expected, resumed = restore_raw(uninterrupted, 20), restore_raw(workdir, 20)
    for a, b in zip(jax.tree_util.tree_leaves(expected['state']),
                    jax.tree_util.tree_leaves(resumed['state'])):
        np.testing.assert_array_equal(a, b)
