"""State_dict conversion: key maps against the spec, exact round trips, strict errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from gsvit_jax.convert import (StateDictMismatchError, abstract_variables, detect_layout,
                               from_torch, numpy_to_torch, to_torch)
from gsvit_jax.convert.keys import to_layout
from gsvit_jax.models import efficientvit, gsvit_encoder
from gsvit_jax.models.efficientvit import attention_bias_index
from torch_reference import gsvit_keys, orig_to_timm_map, timm_model

_STAGE_NAMES = {'0': 'patch_embed', '1': 'blocks1', '2': 'blocks2', '3': 'blocks3'}


def msra_key(orig: str) -> str:
    """Spec key (`0.0.c.weight`, blocks as Sequential indices) -> Microsoft EfficientViT key."""
    stage, _, rest = orig.partition('.')
    return f'{_STAGE_NAMES[stage]}.{rest}'


def first_appearance_index(resolution: int) -> np.ndarray:
    """The original construction: enumerate offsets by first appearance over row-major pairs."""
    points = [(r, c) for r in range(resolution) for c in range(resolution)]
    offsets, idxs = {}, []
    for p1 in points:
        for p2 in points:
            off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            offsets.setdefault(off, len(offsets))
            idxs.append(offsets[off])
    return np.array(idxs, np.int64).reshape(len(points), len(points))


@pytest.fixture(scope='module')
def m5_timm():
    return timm_model('m5', seed=7)


@pytest.fixture(scope='module')
def layouts(m5_timm):
    """The same random M5 encoder weights as timm, Microsoft and GSViT state_dicts."""
    _, timm_sd = m5_timm
    timm_sd = {k: v for k, v in timm_sd.items() if not k.startswith('head.')}
    msra = {}
    for orig, timm_key in orig_to_timm_map().items():
        msra[msra_key(orig)] = timm_sd[timm_key]
    for key in list(msra):  # persistent buffers in the original code
        if key.endswith('attention_biases'):
            side = int(round(msra[key].shape[1] ** 0.5))
            msra[key.replace('attention_biases', 'attention_bias_idxs')] = torch.from_numpy(
                first_appearance_index(side))
    stage_index = {name: index for index, name in _STAGE_NAMES.items()}
    gsvit = {}
    for key, value in msra.items():
        top, _, rest = key.partition('.')
        gsvit[f'evit.{stage_index[top]}.{rest}'] = value
    return {'timm': timm_sd, 'msra': msra, 'gsvit': gsvit}


def zeros_like_shapes(tree):
    return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), tree)


def test_bias_index_formula_equals_original_construction():
    for side in (4, 7):
        np.testing.assert_array_equal(attention_bias_index(side), first_appearance_index(side))


def test_timm_names_equal_the_verified_map():
    for orig, timm_key in orig_to_timm_map().items():
        assert to_layout(msra_key(orig), 'timm') == timm_key
    exported = to_torch(zeros_like_shapes(abstract_variables(gsvit_encoder())), 'timm')
    assert set(exported) == set(orig_to_timm_map().values())


def test_gsvit_layout_has_the_original_keys_shapes_and_dtypes():
    exported = to_torch(zeros_like_shapes(abstract_variables(gsvit_encoder())), 'gsvit')
    reference = {k: v for k, v in gsvit_keys().items() if k.startswith('evit.')}
    assert len(reference) == 828
    assert set(exported) == set(reference)
    for key, (shape, dtype) in reference.items():
        assert exported[key].shape == shape, key
        assert str(exported[key].dtype) == dtype.replace('torch.', ''), key


@pytest.mark.parametrize('layout', ['timm', 'msra', 'gsvit'])
def test_torch_to_jax_to_torch_is_exact(layouts, layout):
    state_dict = layouts[layout]
    assert detect_layout(list(state_dict)) == layout
    variables = from_torch(state_dict, abstract_variables(gsvit_encoder()))
    back = to_torch(variables, layout)
    assert set(back) == set(state_dict)
    for key, value in state_dict.items():
        assert back[key].dtype == value.numpy().dtype, key
        np.testing.assert_array_equal(back[key], value.numpy(), err_msg=key)


@pytest.mark.parametrize('layout', ['timm', 'msra', 'gsvit'])
def test_jax_to_torch_to_jax_is_exact(layout):
    model = efficientvit('m5', num_classes=0)
    # every leaf distinct, including BN statistics and counters, in the shapes of the variables
    leaves, treedef = jax.tree_util.tree_flatten(abstract_variables(model))
    rng = np.random.default_rng(0)
    leaves = [rng.integers(1, 99, l.shape).astype(l.dtype) if l.dtype == jnp.int32
              else rng.normal(size=l.shape).astype(l.dtype) for l in leaves]
    variables = jax.tree_util.tree_unflatten(treedef, leaves)
    restored = from_torch(numpy_to_torch(to_torch(variables, layout)), abstract_variables(model))
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(variables)
    for a, b in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(variables)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_export_loads_strictly_into_timm(m5_timm):
    torch_model, state_dict = m5_timm
    model = efficientvit('m5')
    variables = from_torch(state_dict, abstract_variables(model))
    torch_model.load_state_dict(numpy_to_torch(to_torch(variables, 'timm')), strict=True)


def test_imagenet_checkpoint_wrapper_and_head_drop(layouts, m5_timm):
    _, full = m5_timm
    head = {k: v for k, v in full.items() if k.startswith('head.')}
    msra_head = {'head.bn.' + k[len('head.bn.'):]: v for k, v in head.items() if '.bn.' in k}
    msra_head.update({'head.l.' + k[len('head.linear.'):]: v for k, v in head.items()
                      if '.linear.' in k})
    checkpoint = {'model': {**layouts['msra'], **msra_head}, 'epoch': 299}
    classifier = from_torch(checkpoint, abstract_variables(efficientvit('m5')))
    np.testing.assert_array_equal(classifier['params']['head']['l']['kernel'],
                                  head['head.linear.weight'].numpy().T)
    with pytest.raises(StateDictMismatchError, match='unexpected keys'):
        from_torch(checkpoint, abstract_variables(gsvit_encoder()))
    encoder = from_torch(checkpoint, abstract_variables(gsvit_encoder()), drop_prefixes=('head.',))
    assert 'head' not in encoder['params']


def test_missing_and_misshaped_keys_are_listed_together(layouts):
    state_dict = dict(layouts['gsvit'])
    del state_dict['evit.1.0.dw0.m.c.weight']
    state_dict['evit.2.3.ffn0.m.pw1.c.weight'] = torch.zeros(5, 5, 1, 1)
    state_dict['evit.9.extra'] = torch.zeros(1)
    with pytest.raises(StateDictMismatchError) as err:
        from_torch(state_dict, abstract_variables(gsvit_encoder()))
    message = str(err.value)
    assert 'missing keys (1)' in message and 'evit.1.0.dw0.m.c.weight' in message
    assert 'unexpected keys (1)' in message and 'evit.9.extra' in message
    assert 'evit.2.3.ffn0.m.pw1.c.weight: (576, 288, 1, 1) vs (5, 5, 1, 1)' in message
    assert err.value.missing == ['evit.1.0.dw0.m.c.weight']


def test_weights_for_another_resolution_say_so(layouts):
    with pytest.raises(StateDictMismatchError, match='img_size'):
        from_torch(layouts['gsvit'], abstract_variables(gsvit_encoder(img_size=512)))


def test_unknown_layout_is_a_clear_error():
    with pytest.raises(ValueError, match='unknown state_dict layout.*first keys seen: backbone.x'):
        from_torch({'backbone.x': np.zeros(1)}, abstract_variables(efficientvit('m0')))


def test_dataparallel_prefix_and_2d_pointwise_kernels_are_accepted(layouts):
    state_dict = {}
    for key, value in layouts['msra'].items():
        if value.ndim == 4 and value.shape[2:] == (1, 1):
            value = value[:, :, 0, 0]  # some checkpoints store 1x1 conv weights as 2-D
        state_dict['module.' + key] = value
    variables = from_torch(state_dict, abstract_variables(gsvit_encoder()))
    reference = from_torch(layouts['msra'], abstract_variables(gsvit_encoder()))
    for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(reference)):
        np.testing.assert_array_equal(a, b)
