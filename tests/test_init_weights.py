"""Initial weights for pre-training from PyTorch files: ImageNet/timm encoders and full GSViT files."""
import jax
import numpy as np
import pytest
import torch

from gsvit_jax.convert import StateDictMismatchError, abstract_variables, from_torch, to_torch
from gsvit_jax.models.decoder import gsvit_autoencoder
from gsvit_jax.train.init import load_initial_variables
from torch_reference import timm_model

WIDTHS = (32, 16, 16, 16, 16)


def random_variables(model, seed: int):
    """Random values in the model's variable shapes (no compilation needed)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(s.dtype),
                                  abstract_variables(model))


@pytest.fixture(scope='module')
def model_and_variables():
    model = gsvit_autoencoder('m0', img_size=64, widths=WIDTHS)
    return model, random_variables(model, 0)


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                                    jax.tree_util.tree_leaves(b)))


def test_imagenet_style_file_replaces_the_encoder_only(tmp_path, model_and_variables):
    model, variables = model_and_variables
    _, state_dict = timm_model('m0', seed=31, img_size=64)  # timm layout, with the 1000-class head
    path = tmp_path / 'efficientvit_m0.pth'
    torch.save({'model': state_dict}, path)
    loaded = load_initial_variables(str(path), variables)
    template = abstract_variables(model)
    expected = from_torch(state_dict, {c: template[c]['evit'] for c in ('params', 'batch_stats')},
                          drop_prefixes=('head.',))
    assert leaves_equal(loaded['params']['evit'], expected['params'])
    assert leaves_equal(loaded['params']['decoder'], variables['params']['decoder'])


def test_full_gsvit_file_replaces_everything_and_mismatches_are_refused(tmp_path,
                                                                        model_and_variables):
    model, variables = model_and_variables
    other = random_variables(model, 5)
    path = tmp_path / 'GSViT.pkl'
    torch.save({k: torch.from_numpy(v) for k, v in to_torch(other, 'gsvit').items()}, path)
    assert leaves_equal(load_initial_variables(str(path), variables), other)
    wrong = gsvit_autoencoder('m0', img_size=64, widths=(32, 16, 16, 32, 16))
    wrong_variables = random_variables(wrong, 0)
    with pytest.raises(StateDictMismatchError, match='decoder.conv4.weight'):
        load_initial_variables(str(path), wrong_variables)
