"""The public API: load_encoder -> features / latent / pooled on frames of any size, the same
numbers as the model applied by hand; weights from PyTorch files; save_weights round trip."""
import dataclasses

import jax
import numpy as np
import pytest
import torch

import gsvit_jax
from gsvit_jax.convert import StateDictMismatchError, abstract_variables, from_torch
from gsvit_jax.convert.checkpoints import write_variables
from gsvit_jax.models import efficientvit, flatten_latent, fold_batchnorm
from gsvit_jax.models.random_init import random_variables
from gsvit_jax.preprocess import preprocess


@pytest.fixture(scope='module')
def frames():
    return np.random.default_rng(0).integers(0, 256, (5, 40, 56, 3), np.uint8)  # RGB, any size


@pytest.fixture(scope='module')
def reference(frames):
    """The tiny variant at 96 px (a 2x2 map), applied by hand: random weights, unfused, the
    documented preprocessing."""
    model = efficientvit('tiny', num_classes=0, img_size=96)
    variables = random_variables(model, 96, 0)
    x = preprocess(frames, channel_order='rgb', size=96)
    features = np.asarray(jax.jit(model.apply)(variables, x))
    return variables, features


@pytest.fixture(scope='module')
def enc():
    return gsvit_jax.load_encoder(None, variant='tiny', img_size=96, batch_size=2)


def test_outputs_match_the_model_applied_by_hand(frames, reference, enc):
    _, expected = reference
    assert enc.model.fused and enc.source == 'random'
    features = enc.features(frames)  # 3 batches of 2, the last one padded
    assert features.shape == (5, 2, 2, 64) and features.dtype == np.float32
    np.testing.assert_allclose(features, expected, atol=1e-4 * np.abs(expected).max())
    np.testing.assert_allclose(enc.latent(frames), np.asarray(flatten_latent(features)),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(enc.pooled(frames), features.mean(axis=(1, 2)), atol=1e-5)
    assert enc.latent(frames[0]).shape == (1, 64 * 4)  # one frame (H, W, 3)
    assert enc.pooled(frames[:0]).shape == (0, 64)
    bgr = gsvit_jax.load_encoder(None, variant='tiny', img_size=96, channel_order='bgr',
                                 batch_size=2)
    np.testing.assert_allclose(bgr.features(frames[..., ::-1]), features, atol=1e-5)
    assert bgr.fingerprint == enc.fingerprint and len(enc.fingerprint) == 16


def test_bfloat16_encoder_casts_its_kernels_once(frames):
    """dtype=bfloat16: conv / linear kernels stored in bfloat16 (read in place by the CPU
    kernels), biases float32, and the same features as the float32 weights cast on every call."""
    enc = gsvit_jax.load_encoder(None, variant='tiny', img_size=96, batch_size=2,
                                 dtype=jax.numpy.bfloat16)
    leaves = jax.tree_util.tree_leaves_with_path(enc.variables)
    kinds = {(path[-1].key, str(leaf.dtype)) for path, leaf in leaves}
    assert ('kernel', 'bfloat16') in kinds and ('bias', 'float32') in kinds
    assert ('kernel', 'float32') not in kinds
    float32_weights = jax.tree.map(lambda a: a.astype(np.float32), enc.variables)
    x = preprocess(frames, channel_order='rgb', size=96)
    want = np.asarray(jax.jit(enc.model.apply)(float32_weights, x), np.float32)
    np.testing.assert_array_equal(enc.features(frames), want)
    # the fingerprint is the weights' as loaded, as before kernels were cast (embedding folders
    # made then resume), and not the float32 encoder's
    unfused = efficientvit('tiny', num_classes=0, img_size=96)
    folded = fold_batchnorm(random_variables(unfused, 96, 0))
    uncast = dataclasses.replace(enc, variables=folded, weights_fingerprint=None)
    assert enc.fingerprint == uncast.fingerprint
    float32 = gsvit_jax.load_encoder(None, variant='tiny', img_size=96, batch_size=2)
    assert float32.fingerprint != enc.fingerprint


def test_weights_file_round_trip(tmp_path, frames, reference):
    variables, expected = reference
    path = tmp_path / 'tiny.pth'
    gsvit_jax.save_weights(variables, path, layout='timm')
    loaded = torch.load(path, weights_only=True)  # a real PyTorch file
    assert 'patch_embed.conv1.conv.weight' in loaded
    enc = gsvit_jax.load_encoder(path, variant='tiny', img_size=96, batch_size=2)
    assert enc.source == str(path)
    np.testing.assert_allclose(enc.features(frames), expected,
                               atol=1e-4 * np.abs(expected).max())
    unfused = gsvit_jax.load_encoder(path, variant='tiny', img_size=96, fused=False)
    again = from_torch(loaded, abstract_variables(unfused.model))
    for a, b in zip(*(jax_leaves(t) for t in (again, unfused.variables))):
        np.testing.assert_array_equal(a, b)
    gsvit_jax.save_weights(variables, tmp_path / 'tiny.safetensors')
    write_variables(variables, tmp_path / 'orbax')  # what gsvit-convert from-torch writes
    for other in (tmp_path / 'tiny.safetensors', tmp_path / 'orbax'):
        same = gsvit_jax.load_encoder(other, variant='tiny', img_size=96)
        assert same.fingerprint == enc.fingerprint  # the same weights: the same latents
        for a, b in zip(jax_leaves(same.variables), jax_leaves(enc.variables)):
            np.testing.assert_array_equal(a, b)


def jax_leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_bad_input_is_named(tmp_path, reference, enc):
    variables, _ = reference
    with pytest.raises(FileNotFoundError, match='absent.pth'):
        gsvit_jax.load_encoder(tmp_path / 'absent.pth', variant='tiny', img_size=96)
    with pytest.raises(ValueError, match='uint8'):
        enc.latent(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match=r'\(H, W, 3\)'):
        enc.latent(np.zeros((1, 64, 64), np.uint8))
    with pytest.raises(ValueError, match='fold_batchnorm'):  # unfolded weights, fused model
        gsvit_jax.Encoder(enc.model, variables)
    with pytest.raises(ValueError, match="'rgb' or 'bgr'"):
        gsvit_jax.Encoder(enc.model, enc.variables, channel_order='RGB')
    path = tmp_path / 'tiny_96.safetensors'
    gsvit_jax.save_weights(variables, path)
    with pytest.raises(StateDictMismatchError, match=r'(?s)tiny_96.*attention_biases'):
        gsvit_jax.load_encoder(path, variant='tiny', img_size=224)  # another resolution
    with pytest.raises(StateDictMismatchError, match=r"(?s)tiny_96.*variant='tiny'"):
        gsvit_jax.load_encoder(path, variant='m0', img_size=96)  # another variant


def test_autoencoder_predicts_frames_in_the_input_channel_order(tmp_path, frames):
    ae = gsvit_jax.load_autoencoder(None, variant='tiny', img_size=64, decoder_widths=(16,) * 5,
                                    batch_size=4)
    predicted = ae.predict(frames)  # batches of 4 and 1 (padded)
    assert predicted.shape == (5, 64, 64, 3) and 0 <= predicted.min() and predicted.max() <= 1
    x = preprocess(frames, channel_order='rgb', size=64)
    expected = np.asarray(jax.jit(ae.model.apply)(ae.variables, x))[..., ::-1]  # BGR -> RGB
    np.testing.assert_allclose(predicted, expected, atol=1e-5)
    path = tmp_path / 'ae.pth'
    gsvit_jax.save_weights(ae.variables, path, layout='gsvit')  # encoder and decoder keys
    again = gsvit_jax.load_autoencoder(path, variant='tiny', img_size=64,
                                       decoder_widths=(16,) * 5, seed=1)
    for a, b in zip(jax_leaves(ae.variables), jax_leaves(again.variables)):
        np.testing.assert_array_equal(a, b)
