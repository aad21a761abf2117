"""Phase recognition in 2 processes x 2 CPU devices: the feature cache is built by both (each its
share of the videos) and equals the one-process cache; the head trained in 2 processes matches."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from gsvit_jax.phase.features import load_features, read_manifest
from multiprocess import ROOT, launch
from xla_env import xla_flags

CONFIG = ROOT / 'experiments' / 'configs' / 'phase_cholec80.py'
TIMEOUT = 900


def phase_args(workdir, demo_root):
    return [str(ROOT / 'experiments' / 'train_phase.py'), f'--config={CONFIG}:demo',
            f'--workdir={workdir}', f'--config.data.demo_root={demo_root}',
            '--config.epochs=3', '--config.eval_every_epochs=1', '--config.log_every_steps=1',
            '--config.encoder.variant=tiny',  # not a released size: compiles in half M0's time
            '--config.head.hidden=(256, 64)']  # as test_phase_train: the paper's MLP, smaller


def losses(workdir) -> dict[int, float]:
    rows = [json.loads(l) for l in (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines()]
    return {r['step']: r['train/loss'] for r in rows if 'train/loss' in r}


def cache_dirs(workdir) -> list[pathlib.Path]:
    return sorted(p.parent for p in (pathlib.Path(workdir) / 'features').rglob('manifest.json'))


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('phase_multiprocess')
    demo_root = root / 'data'  # one generated dataset; each run builds its own feature cache
    env = {**os.environ, 'XLA_FLAGS': xla_flags(4)}
    out = subprocess.run([sys.executable, *phase_args(root / 'one', demo_root)], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    run = launch(phase_args(root / 'two', demo_root), root / 'logs', mode='env')  # JAX_* variables
    run.check(TIMEOUT)
    return root / 'one', root / 'two', run


def test_feature_cache_built_across_processes_equals_one_process(runs):
    one, two, run = runs
    assert 'encoding train (process 0/2)' in run.log(0)
    assert 'encoding train (process 1/2)' in run.log(1)  # both processes encoded videos
    dirs_one, dirs_two = cache_dirs(one), cache_dirs(two)
    assert [d.name for d in dirs_one] == [d.name for d in dirs_two] == ['test', 'train']
    for a, b in zip(dirs_one, dirs_two):
        manifest = read_manifest(b)
        assert manifest['complete'] and manifest['videos'] == read_manifest(a)['videos']
        assert not list(b.glob('manifest.process-*.json'))  # merged, then removed
        features_a, features_b = load_features(a), load_features(b)
        for video in features_a:
            np.testing.assert_array_equal(features_a[video].phase, features_b[video].phase)
            np.testing.assert_array_equal(features_a[video].frame_index,
                                          features_b[video].frame_index)
            np.testing.assert_allclose(features_a[video].latent.astype(np.float32),
                                       features_b[video].latent.astype(np.float32), atol=2e-3)


def test_head_trained_in_two_processes_matches_one_process(runs):
    one, two, _ = runs
    a, b = losses(one), losses(two)
    assert sorted(a) == sorted(b) and len(a) >= 10
    for step in a:  # cross-device sums in another order: float32 rounding (measured 8e-7)
        assert abs(a[step] - b[step]) <= 1e-5 * abs(a[step]), (step, a[step], b[step])
    report_a = json.loads((one / 'eval' / 'report.json').read_text())['results']
    report_b = json.loads((two / 'eval' / 'report.json').read_text())['results']
    for model in report_a:  # the same predictions: the same strict accuracy
        assert report_a[model]['strict']['accuracy_mean'] == report_b[model]['strict'][
            'accuracy_mean']
    assert (two / 'eval' / 'report.md').is_file() and (two / 'eval' / 'timelines.png').is_file()
    assert (two / 'metrics.jsonl').read_text().count('"train/loss"') == len(b)  # process 0 only
