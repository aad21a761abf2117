"""GSViT decoder/autoencoder: parameter count, the original key set, parity with a PyTorch reference."""
import jax
import numpy as np
import pytest
import torch

from gsvit_jax.convert import abstract_variables, from_torch, numpy_to_torch, to_torch
from gsvit_jax.models.decoder import gsvit_autoencoder
from torch_gsvit_decoder import ReferenceDecoder
from torch_reference import gsvit_keys, randomize_, timm_model

SMALL_WIDTHS = (64, 32, 32, 32, 16)


def count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def test_default_decoder_has_the_original_parameter_count():
    params = abstract_variables(gsvit_autoencoder())['params']
    assert count(params['decoder']) == 328_210_243
    assert count(params['evit']) == 12_088_004


def test_full_autoencoder_export_is_the_original_state_dict():
    """Key set, shapes and dtypes of the 897-entry GSViT.pkl; loads strictly into the reference."""
    shapes = abstract_variables(gsvit_autoencoder())
    zeros = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    exported = to_torch(zeros, 'gsvit')
    reference = gsvit_keys()
    assert set(exported) == set(reference) and len(reference) == 897
    for key, (shape, dtype) in reference.items():
        assert exported[key].shape == shape and str(exported[key].dtype) == dtype, key
    decoder = {k[len('decoder.'):]: v for k, v in exported.items() if k.startswith('decoder.')}
    ReferenceDecoder().load_state_dict(numpy_to_torch(decoder), strict=True)


def randomized_reference(latent_dim, widths, base, seed, predict_change=False):
    torch.manual_seed(seed)
    decoder = ReferenceDecoder(latent_dim, widths, base, predict_change)
    gen = torch.Generator().manual_seed(seed)
    for name, value in decoder.state_dict().items():
        if name.endswith('running_mean'):
            value.copy_(torch.randn(value.shape, generator=gen) * 0.1)
        elif name.endswith('running_var'):
            value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
        elif name.endswith('num_batches_tracked'):
            value.fill_(5)
    return decoder


def decoder_variables(reference: ReferenceDecoder, model) -> dict:
    """Reference decoder weights -> the Flax decoder's variables, through the gsvit layout."""
    template = abstract_variables(model)
    only_decoder = {c: {'decoder': template[c]['decoder']} for c in ('params', 'batch_stats')}
    variables = from_torch({'decoder.' + k: v for k, v in reference.state_dict().items()},
                           only_decoder)
    return {c: variables[c]['decoder'] for c in ('params', 'batch_stats')}


@pytest.mark.parametrize('predict_change', [False, True])
def test_decoder_matches_pytorch_in_eval_and_train_mode(predict_change):
    reference = randomized_reference(192 * 4, SMALL_WIDTHS, 3, seed=22,
                                     predict_change=predict_change)
    model = gsvit_autoencoder('m0', img_size=96, widths=SMALL_WIDTHS, predict_change=predict_change)
    variables = decoder_variables(reference, model)
    features = np.random.default_rng(0).normal(size=(4, 2, 2, 192)).astype(np.float32)
    features_torch = torch.from_numpy(features.transpose(0, 3, 1, 2).copy())

    reference.eval()
    with torch.no_grad():
        expected = reference(features_torch).numpy().transpose(0, 2, 3, 1)
    out = np.asarray(jax.jit(model.decoder.apply)(variables, features))
    assert out.shape == expected.shape == (4, 96, 96, 3)
    assert np.abs(out - expected).max() <= 1e-4
    assert expected.std() > 1e-3  # not a constant image

    reference.train()
    with torch.no_grad():
        expected = reference(features_torch).numpy().transpose(0, 2, 3, 1)
    out, updates = jax.jit(lambda v, f: model.decoder.apply(v, f, train=True,
                                                            mutable=['batch_stats']))(variables, features)
    assert np.abs(np.asarray(out) - expected).max() <= 1e-4
    stats = to_torch({'params': {'decoder': variables['params']},
                      'batch_stats': {'decoder': updates['batch_stats']}}, 'gsvit')
    for key, value in reference.state_dict().items():  # running statistics move like PyTorch's
        if 'running' in key or 'num_batches' in key:
            np.testing.assert_allclose(stats['decoder.' + key], value.numpy(), rtol=1e-4,
                                       atol=1e-5, err_msg=key)


def test_autoencoder_matches_pytorch_encoder_plus_reference_decoder():
    img_size = 64  # encoder M0 -> (B, 1, 1, 192) latent; decoder base 2 -> 64x64 output
    encoder, encoder_sd = timm_model('m0', seed=21, img_size=img_size)
    decoder = randomized_reference(192, SMALL_WIDTHS, 2, seed=23).eval()
    model = gsvit_autoencoder('m0', img_size=img_size, widths=SMALL_WIDTHS)
    template = abstract_variables(model)
    encoder_only = {c: template[c]['evit'] for c in ('params', 'batch_stats')}
    enc_vars = from_torch(encoder_sd, encoder_only, drop_prefixes=('head.',))
    state_dict = {**to_torch({c: {'evit': enc_vars[c]} for c in enc_vars}, 'gsvit'),
                  **{'decoder.' + k: v for k, v in decoder.state_dict().items()}}
    variables = from_torch(state_dict, template)
    x = np.random.default_rng(0).uniform(size=(4, img_size, img_size, 3)).astype(np.float32)
    with torch.no_grad():
        expected = decoder(encoder.forward_features(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())))
    out = np.asarray(jax.jit(model.apply)(variables, x))
    assert np.abs(out - expected.numpy().transpose(0, 2, 3, 1)).max() <= 1e-4
