"""BatchNorm folding for inference: same outputs, one compilation per input shape, and the
residual sums inside the products."""
import jax
import numpy as np
import pytest

from gsvit_jax.convert import abstract_variables, from_torch
from gsvit_jax.kernels import matmul, onednn
from gsvit_jax.models import efficientvit, fold_batchnorm, gsvit_encoder
from torch_reference import timm_model


def test_folded_matches_unfolded(photos):
    _, state_dict = timm_model('m0', seed=5)
    x = np.concatenate([photos / 255.0, np.random.default_rng(1).uniform(size=(1, 224, 224, 3))])
    x = x.astype(np.float32)
    model = efficientvit('m0')
    variables = from_torch(state_dict, abstract_variables(model))
    folded = fold_batchnorm(variables)
    assert 'batch_stats' not in folded
    out = np.asarray(jax.jit(model.apply)(variables, x))
    out_fused = np.asarray(jax.jit(efficientvit('m0', fused=True).apply)(folded, x))
    assert np.abs(out - out_fused).max() <= 1e-5
    assert np.abs(out).max() > 0.1


def test_folded_gsvit_encoder_matches_and_compiles_once_per_shape():
    _, state_dict = timm_model('m5', seed=6)
    variables = from_torch(state_dict, abstract_variables(gsvit_encoder()), drop_prefixes=('head.',))
    fused = gsvit_encoder(fused=True)
    forward = jax.jit(fused.apply)
    folded = fold_batchnorm(variables)
    x = np.random.default_rng(2).uniform(size=(2, 224, 224, 3)).astype(np.float32)
    reference = np.asarray(jax.jit(gsvit_encoder().apply)(variables, x))
    assert np.abs(np.asarray(forward(folded, x)) - reference).max() <= 1e-5
    forward(folded, x + 1.0)  # new values, same shape: no new compilation
    assert forward._cache_size() == 1
    forward(folded, x[:1])
    assert forward._cache_size() == 2


def test_folded_encoder_adds_its_residuals_inside_the_products(monkeypatch):
    """Fused, each FFN's and each one-window attention's residual sum is done by the product that
    ends the block (21 in M0: 16 FFNs, 5 attentions; stage 1's 2x2 windows add theirs after), each
    residual depthwise conv's by oneDNN's depthwise kernel (16), with the unfused model's
    numbers."""
    if not onednn.available():
        pytest.skip('oneDNN kernels unavailable here (test_onednn checks where they must build)')
    monkeypatch.setattr(onednn, 'CONV_IMPL', 'onednn')
    monkeypatch.setattr(matmul, 'MIN_FLOAT32_MACS', 0)  # every product through oneDNN
    _, state_dict = timm_model('m0', seed=7)
    model = efficientvit('m0', num_classes=0)
    variables = from_torch(state_dict, abstract_variables(model), drop_prefixes=('head.',))
    x = np.random.default_rng(3).uniform(size=(2, 224, 224, 3)).astype(np.float32)
    fused = jax.jit(efficientvit('m0', num_classes=0, fused=True).apply)
    folded = fold_batchnorm(variables)
    compiled = fused.lower(folded, x).compile().as_text()
    assert compiled.count('custom_call_target="gsvit_onednn_matmul_residual"') == 21
    assert compiled.count('custom_call_target="gsvit_onednn_depthwise_residual"') == 16
    reference = np.asarray(jax.jit(model.apply)(variables, x))
    assert np.abs(np.asarray(fused(folded, x)) - reference).max() <= 1e-5
    assert np.abs(reference).max() > 0.1
