"""Numerical parity with timm's PyTorch EfficientViT (eval mode, fp32): max abs diff <= 1e-4."""
import jax
import numpy as np
import pytest
import torch

from gsvit_jax.convert import abstract_variables, from_torch
from gsvit_jax.kernels import matmul, onednn
from gsvit_jax.models import efficientvit, fold_batchnorm
from gsvit_jax.preprocess import preprocess
from torch_reference import forward, timm_model

TOLERANCE = 1e-4
torch.set_num_threads(2)


def inputs(photos: np.ndarray, size: int) -> np.ndarray:
    """Real photographs (model preprocessing: BGR in [0, 1]) plus two random images."""
    real = np.asarray(preprocess(photos, channel_order='rgb', size=size))
    noise = np.random.default_rng(0).uniform(0, 1, (2, size, size, 3)).astype(np.float32)
    return np.concatenate([real, noise])


@pytest.mark.parametrize('variant,img_size', [('m0', 224), ('m5', 224), ('m0', 256)])
def test_logits_and_features_match_timm(variant, img_size, photos):
    torch_model, state_dict = timm_model(variant, seed=1, img_size=img_size)
    x = inputs(photos, img_size)

    classifier = efficientvit(variant, img_size=img_size)
    variables = from_torch(state_dict, abstract_variables(classifier))
    logits = np.asarray(jax.jit(classifier.apply)(variables, x))
    reference = forward(torch_model, x)
    assert logits.shape == reference.shape == (5, 1000)
    assert np.abs(logits - reference).max() <= TOLERANCE
    assert np.abs(reference).max() > 0.1  # the comparison is not between two near-zero outputs

    encoder = efficientvit(variant, num_classes=0, img_size=img_size)
    enc_vars = from_torch(state_dict, abstract_variables(encoder), drop_prefixes=('head.',))
    features = np.asarray(jax.jit(encoder.apply)(enc_vars, x))
    with torch.no_grad():
        ref_features = torch_model.forward_features(
            torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
    assert features.shape == ref_features.shape
    assert np.abs(features - ref_features).max() <= TOLERANCE



def test_folded_encoder_on_the_fast_cpu_path_matches_timm(photos):
    """The inference model users run (BatchNorm folded) at a batch whose 1x1 convolutions are
    large enough for oneDNN's products (`matmul.MIN_FLOAT32_MACS`) with their ReLUs fused."""
    torch_model, state_dict = timm_model('m5', seed=1)
    x = inputs(photos, 224)
    x = np.concatenate([x, x[:, :, ::-1]])  # 10 images: 1960 rows in stage 1
    assert len(x) * 14 * 14 * 192 * 384 >= matmul.MIN_FLOAT32_MACS
    encoder = efficientvit('m5', num_classes=0, fused=True)
    variables = fold_batchnorm(from_torch(state_dict, abstract_variables(efficientvit(
        'm5', num_classes=0)), drop_prefixes=('head.',)))
    fn = jax.jit(encoder.apply)
    if onednn.use_onednn():
        assert 'gsvit_onednn_matmul' in fn.lower(variables, x).as_text()
    features = np.asarray(fn(variables, x))
    with torch.no_grad():
        reference = torch_model.forward_features(
            torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
    assert np.abs(reference).max() > 0.1
    assert np.abs(features - reference).max() <= TOLERANCE
