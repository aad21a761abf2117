"""The README's demo and weight files from disk (.safetensors and torch.save)."""
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from gsvit_jax.convert import abstract_variables, from_torch, load_torch_file, to_torch
from gsvit_jax.demo import run_encode_demo
from gsvit_jax.models import gsvit_encoder
from torch_reference import timm_model


@pytest.fixture(scope='module')
def gsvit_state_dict():
    _, state_dict = timm_model('m5', seed=11)
    variables = from_torch(state_dict, abstract_variables(gsvit_encoder()), drop_prefixes=('head.',))
    return to_torch(variables, 'gsvit')


def test_demo_with_imported_weights_reports_shapes_and_timings(tmp_path, gsvit_state_dict):
    path = tmp_path / 'GSViT.pkl'
    torch.save({k: torch.from_numpy(v) for k, v in gsvit_state_dict.items()}, path)
    result = run_encode_demo(weights=str(path), batch=2)
    assert result['features_shape'] == (2, 4, 4, 384)
    assert result['latent_shape'] == (2, 6144)
    assert result['fold_max_diff'] <= 1e-4  # the fold's own 1e-5 test: test_fold.py
    assert result['batch1_ms'] > 0 and result['batch2_img_per_s'] > 0


def test_safetensors_and_bad_files(tmp_path, gsvit_state_dict):
    path = tmp_path / 'encoder.safetensors'
    save_file(gsvit_state_dict, str(path))
    loaded = load_torch_file(path)
    assert set(loaded) == set(gsvit_state_dict)
    np.testing.assert_array_equal(loaded['evit.0.0.c.weight'], gsvit_state_dict['evit.0.0.c.weight'])
    with pytest.raises(FileNotFoundError, match='no weights file'):
        load_torch_file(tmp_path / 'absent.pth')
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='garbage.pth: not a PyTorch state_dict file'):
        load_torch_file(garbage)
