"""`gsvit-convert`: exact Orbax <-> PyTorch round trips, training checkpoints, ImageNet files,
user errors."""
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
import torch
from safetensors.numpy import load_file

from gsvit_jax.convert import abstract_variables, numpy_to_torch, to_torch
from gsvit_jax.convert.checkpoints import read_variables, write_variables
from gsvit_jax.convert.cli import main
from gsvit_jax.convert.state_dict import ConvertError, select_variables
from gsvit_jax.models import efficientvit
from gsvit_jax.models.decoder import gsvit_autoencoder
from gsvit_jax.train.checkpointing import Checkpointer
from gsvit_jax.train.init import load_orbax_variables
from gsvit_jax.train.state import create_train_state
from torch_gsvit_decoder import ReferenceDecoder

WIDTHS = (64, 48, 48, 32, 16)
IMG_SIZE = 64


def random_variables(shapes, seed: int) -> dict:
    """Every leaf random (counters too), so a dropped or mixed-up tensor cannot go unnoticed."""
    rng = np.random.default_rng(seed)

    def fill(shape):
        if np.issubdtype(shape.dtype, np.integer):
            return rng.integers(1, 1000, shape.shape).astype(shape.dtype)
        return rng.standard_normal(shape.shape).astype(shape.dtype)

    return jax.tree_util.tree_map(fill, shapes)


def assert_identical(got, want) -> None:
    got_leaves = jax.tree_util.tree_leaves_with_path(got)
    want_leaves = jax.tree_util.tree_leaves_with_path(want)
    assert [p for p, _ in got_leaves] == [p for p, _ in want_leaves]
    for (path, g), (_, w) in zip(got_leaves, want_leaves):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype and np.array_equal(g, w), jax.tree_util.keystr(path)


def encoder_part(variables) -> dict:
    return {c: tree['evit'] for c, tree in variables.items()}


def run(capsys, *argv) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope='module')
def shapes():
    return abstract_variables(gsvit_autoencoder('m0', img_size=IMG_SIZE, widths=WIDTHS))


@pytest.fixture(scope='module')
def variables(shapes):
    return random_variables(shapes, seed=0)


@pytest.fixture(scope='module')
def checkpoint(variables, tmp_path_factory):
    """A from-torch style checkpoint (item `variables`) of the small autoencoder."""
    path = tmp_path_factory.mktemp('ckpt') / 'variables'
    write_variables(variables, path)
    return path


@pytest.fixture(scope='module')
def gsvit_file(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp('export') / 'gsvit.pth'
    assert main(['to-torch', str(checkpoint), str(out)]) == 0
    return out


def test_gsvit_round_trip_is_exact(gsvit_file, variables, tmp_path, capsys):
    state_dict = torch.load(gsvit_file, weights_only=True)
    expected = to_torch(variables, 'gsvit')
    assert set(state_dict) == set(expected)
    assert all(k.startswith(('evit.', 'decoder.')) for k in state_dict)
    decoder = {k[len('decoder.'):]: v for k, v in state_dict.items() if k.startswith('decoder.')}
    ReferenceDecoder(192, WIDTHS, IMG_SIZE // 32).load_state_dict(decoder, strict=True)

    status, out, _ = run(capsys, 'from-torch', gsvit_file, tmp_path / 'back')
    assert status == 0
    assert 'gsvit layout' in out and f'{IMG_SIZE}px' in out and str(WIDTHS) in out
    restored, step = read_variables(tmp_path / 'back')
    assert step == 0
    assert_identical(restored, variables)


@pytest.mark.parametrize('layout, flags, suffix', [('msra', ['--encoder-only'], '.pth'),
                                                   ('timm', [], '.safetensors')])
def test_encoder_round_trip_is_exact(checkpoint, variables, tmp_path, capsys,
                                     layout, flags, suffix):
    out = tmp_path / f'encoder{suffix}'
    status, summary, _ = run(capsys, 'to-torch', checkpoint, out, '--layout', layout, *flags)
    assert status == 0 and 'encoder' in summary and f'{layout} layout' in summary
    state_dict = load_file(out) if suffix == '.safetensors' else torch.load(out, weights_only=True)
    encoder = encoder_part(variables)
    assert set(state_dict) == set(to_torch(encoder, layout))
    if layout == 'timm':
        import timm
        reference = timm.create_model('efficientvit_m0', img_size=IMG_SIZE, num_classes=0)
        reference.load_state_dict(numpy_to_torch(state_dict), strict=True)

    assert run(capsys, 'from-torch', out, tmp_path / 'back')[0] == 0
    assert_identical(read_variables(tmp_path / 'back')[0], encoder)


def test_training_checkpoint_converts_and_loads_for_init_from(shapes, variables, tmp_path, capsys):
    workdir = tmp_path / 'workdir'
    checkpointer = Checkpointer(workdir, async_save=False)
    checkpointer.save(5, create_train_state(variables, optax.adam(1e-3), seed=0), None, force=True)
    checkpointer.close()

    status, _, err = run(capsys, 'to-torch', workdir / 'checkpoints', tmp_path / 'x.pth',
                         '--step', 4)
    assert status == 2 and 'no step 4' in err and 'steps: [5]' in err
    status, out, _ = run(capsys, 'to-torch', workdir, tmp_path / 'trained.pth')
    assert status == 0 and 'step 5' in out and 'autoencoder' in out
    assert run(capsys, 'from-torch', tmp_path / 'trained.pth', tmp_path / 'init')[0] == 0

    loaded = load_orbax_variables(str(tmp_path / 'init'), random_variables(shapes, seed=1))
    assert_identical(loaded, variables)


def test_imagenet_file_drops_the_head(shapes, tmp_path, capsys):
    classifier = random_variables(
        abstract_variables(efficientvit('m0', num_classes=10, img_size=IMG_SIZE)), seed=2)
    weights = tmp_path / 'efficientvit_m0.pth'
    torch.save({'model': numpy_to_torch(to_torch(classifier, 'msra'))}, weights)

    status, out, _ = run(capsys, 'from-torch', weights, tmp_path / 'init')
    assert status == 0
    assert 'dropping the classifier head: 7 tensors head.*' in out
    assert 'msra layout' in out and f'M0 encoder at {IMG_SIZE}px' in out

    given = random_variables(shapes, seed=3)
    loaded = load_orbax_variables(str(tmp_path / 'init'), given)
    encoder = {c: {k: v for k, v in tree.items() if k != 'head'} for c, tree in classifier.items()}
    assert_identical(encoder_part(loaded), encoder)
    assert_identical(loaded['params']['decoder'], given['params']['decoder'])
    with pytest.raises(ConvertError, match='classifier head'):  # a JAX classifier to gsvit keys
        select_variables(classifier, 'gsvit', encoder_only=True)


def test_mismatched_state_dict_lists_every_key(gsvit_file, tmp_path, capsys):
    state_dict = torch.load(gsvit_file, weights_only=True)
    del state_dict['decoder.fc.bias']
    state_dict['decoder.extra.weight'] = torch.zeros(3)
    state_dict['evit.0.0.c.weight'] = torch.zeros(8, 3, 5, 5)
    bad = tmp_path / 'bad.pth'
    torch.save(state_dict, bad)

    status, _, err = run(capsys, 'from-torch', bad, tmp_path / 'out')
    assert status == 2
    for text in ('missing keys (1)', 'decoder.fc.bias', 'unexpected keys (1)',
                 'decoder.extra.weight', 'evit.0.0.c.weight: (8, 3, 3, 3) vs (8, 3, 5, 5)'):
        assert text in err
    assert 'Traceback' not in err and not (tmp_path / 'out').exists()


def test_user_errors_are_one_line(checkpoint, gsvit_file, tmp_path, capsys):
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a pickle')
    (tmp_path / 'full').mkdir()
    (tmp_path / 'full' / 'file').write_text('x')
    existing = tmp_path / 'existing.pth'
    existing.write_bytes(b'keep')
    cases = [
        (('from-torch', tmp_path / 'missing.pth', tmp_path / 'o1'), 'no weights file at'),
        (('from-torch', garbage, tmp_path / 'o2'), 'not a PyTorch state_dict file'),
        (('from-torch', gsvit_file, tmp_path / 'full'), 'is not empty; pass --overwrite'),
        (('from-torch', gsvit_file, tmp_path / 'o3', '--layout', 'timm'), 'gsvit-layout keys'),
        (('to-torch', tmp_path / 'nothing', tmp_path / 'o.pth'), 'no checkpoint at'),
        (('to-torch', checkpoint, existing), 'exists; pass --overwrite'),
        (('to-torch', checkpoint, tmp_path / 'o.txt'), 'unknown weights file type'),
    ]
    for argv, message in cases:
        status, _, err = run(capsys, *argv)
        assert status == 2 and message in err and err.count('\n') == 1, (argv, err)
    assert existing.read_bytes() == b'keep'
    assert run(capsys, 'to-torch', checkpoint, existing, '--overwrite')[0] == 0
    assert set(torch.load(existing, weights_only=True)) == set(torch.load(gsvit_file,
                                                                          weights_only=True))
    with pytest.raises(SystemExit) as exit_info:
        main(['to-torch', str(checkpoint), str(tmp_path / 'o.pth'), '--layout', 'onnx'])
    assert exit_info.value.code == 2 and 'invalid choice' in capsys.readouterr().err


def test_module_entry_point_help():
    result = subprocess.run([sys.executable, '-m', 'gsvit_jax.convert', '--help'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert 'to-torch' in result.stdout and 'from-torch' in result.stdout
