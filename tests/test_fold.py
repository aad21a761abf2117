"""BatchNorm folding for inference: same outputs, and one compilation per input shape."""
import jax
import numpy as np

from gsvit_jax.convert import abstract_variables, from_torch
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
