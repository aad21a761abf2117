"""EfficientViT/GSViT structure: parameter counts, shapes, latent order, init, train mode."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gsvit_jax.convert import abstract_variables
from gsvit_jax.models import efficientvit, flatten_latent, gsvit_encoder, latent_dim, unflatten_latent
from gsvit_jax.models.random_init import random_variables

# Reference counts of the PyTorch models (spec §1.9): (with 1000-class head, encoder only).
REFERENCE_PARAMS = {
    'm0': (2_349_436, 2_156_052), 'm1': (2_980_560, 2_787_176), 'm2': (4_187_554, 3_962_106),
    'm3': (6_900_722, 6_579_082), 'm4': (8_804_228, 8_418_460), 'm5': (12_473_772, 12_088_004),
}


def count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize('variant', sorted(REFERENCE_PARAMS))
def test_parameter_counts_match_pytorch(variant):
    with_head, encoder = REFERENCE_PARAMS[variant]
    assert count(abstract_variables(efficientvit(variant))['params']) == with_head
    assert count(abstract_variables(efficientvit(variant, num_classes=0))['params']) == encoder


def test_gsvit_encoder_is_m5_without_head():
    shapes = abstract_variables(gsvit_encoder())
    assert count(shapes['params']) == 12_088_004
    assert sorted(shapes['params']) == ['blocks1', 'blocks2', 'blocks3', 'patch_embed']
    assert shapes['params']['blocks3']['6']['mixer']['m']['attn']['attention_biases'].shape == (4, 16)
    assert latent_dim() == 6144


def test_bias_tables_are_sized_from_img_size():
    shapes = abstract_variables(gsvit_encoder(img_size=512))['params']
    # 512 -> stage maps 32, 16, 8: every stage is windowed at 7x7
    assert shapes['blocks3']['3']['mixer']['m']['attn']['attention_biases'].shape == (4, 49)
    assert latent_dim(512) == 384 * 64


def test_forward_shapes_and_channel_major_latent():
    model = gsvit_encoder()
    variables = random_variables(model, 224)
    x = jax.random.uniform(jax.random.key(1), (2, 224, 224, 3))
    features = jax.jit(model.apply)(variables, x)
    assert features.shape == (2, 4, 4, 384) and features.dtype == jnp.float32
    latent = flatten_latent(features)
    assert latent.shape == (2, 6144)
    nchw = np.asarray(features).transpose(0, 3, 1, 2)  # PyTorch's (B, C, H, W).flatten(1)
    np.testing.assert_array_equal(np.asarray(latent), nchw.reshape(2, -1))
    np.testing.assert_array_equal(np.asarray(unflatten_latent(latent)), np.asarray(features))


def test_blocks_start_as_identity_like_pytorch_init():
    params = abstract_variables(gsvit_encoder())['params']
    variables = random_variables(gsvit_encoder(), 224)['params']
    block = variables['blocks2']['3']
    for name in ('dw0', 'dw1'):
        assert not np.any(block[name]['m']['bn']['weight'])
    assert not np.any(block['ffn0']['m']['pw2']['bn']['weight'])
    assert not np.any(block['mixer']['m']['attn']['proj_1']['bn']['weight'])
    assert np.all(variables['blocks2']['0']['0']['m']['bn']['weight'] == 1)  # downsample dw keeps 1
    assert params['blocks2']['1']['se']['fc1']['kernel'].shape == (1, 1, 768, 192)


def test_train_mode_updates_batch_stats_and_rejects_wrong_size():
    model = efficientvit('m0', num_classes=10, img_size=64)
    variables = random_variables(model, 64)
    x = jax.random.uniform(jax.random.key(1), (4, 64, 64, 3))
    logits, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))(
        variables, x)
    assert logits.shape == (4, 10)
    before = variables['batch_stats']['patch_embed']['0']['bn']
    after = updates['batch_stats']['patch_embed']['0']['bn']
    assert int(after['num_batches_tracked']) == 1
    assert not np.allclose(before['running_mean'], after['running_mean'])
    with pytest.raises(ValueError, match=r'expected input \(B, 64, 64, 3\)'):
        model.apply(variables, jnp.zeros((1, 224, 224, 3)))


def depthwise_inputs(dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(2, 9, 9, 16)), dtype)
    residual = jnp.asarray(rng.normal(size=(2, 9, 9, 16)), dtype)
    params = {'kernel': jnp.asarray(rng.normal(size=(3, 3, 1, 16)), jnp.float32),
              'bias': jnp.asarray(rng.normal(size=(16,)), jnp.float32)}
    return x, residual, {'params': params}


@pytest.mark.parametrize('stride', [1, 2])
def test_depthwise_shifted_sum_matches_grouped_convolution(monkeypatch, stride):
    module = importlib.import_module('gsvit_jax.models.efficientvit')
    conv = module.DepthwiseConv(16, 3, stride, 1, use_bias=True)
    x, residual, variables = depthwise_inputs(jnp.float32)
    residual = residual[:, ::stride, ::stride]
    outputs = {}
    for impl in ('shifted', 'grouped'):
        monkeypatch.setattr(module, 'DEPTHWISE_IMPL', impl)
        outputs[impl] = np.asarray(conv.apply(variables, x, residual))
    assert outputs['shifted'].shape == (2, 9 // stride + stride - 1, 9 // stride + stride - 1, 16)
    np.testing.assert_allclose(outputs['shifted'], outputs['grouped'], rtol=1e-5, atol=1e-5)


def test_bfloat16_depthwise_sums_in_float32_and_rounds_once(monkeypatch):
    """In bfloat16 the taps, the float32 bias and the residual are summed in float32 and rounded
    once: exactly the float32 sum of the bfloat16 inputs, rounded (rounding after each add would
    lose ~3 bits)."""
    module = importlib.import_module('gsvit_jax.models.efficientvit')
    monkeypatch.setattr(module, 'DEPTHWISE_IMPL', 'shifted')
    x, residual, variables = depthwise_inputs(jnp.bfloat16)
    kernel = variables['params']['kernel'].astype(jnp.bfloat16).astype(jnp.float32)
    rounded = {'params': {**variables['params'], 'kernel': kernel}}
    got = module.DepthwiseConv(16, 3, 1, 1, use_bias=True, dtype=jnp.bfloat16).apply(
        variables, x, residual)
    want = module.DepthwiseConv(16, 3, 1, 1, use_bias=True).apply(
        rounded, x.astype(jnp.float32), residual.astype(jnp.float32))
    assert got.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(got, np.float32),
                                  np.asarray(want.astype(jnp.bfloat16), np.float32))
