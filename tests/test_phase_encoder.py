"""Frozen encoder weights for phase recognition: from PyTorch files and Orbax checkpoints."""
import jax
import numpy as np
import pytest
import torch

from gsvit_jax.convert import StateDictMismatchError, to_torch
from gsvit_jax.phase.encoder import (build_encoder, fingerprint, initial_encoder_variables,
                                     load_encoder_variables, padded_size)
from gsvit_jax.train.checkpointing import Checkpointer


@pytest.fixture(scope='module')
def encoder_and_variables():
    encoder = build_encoder('m0', 64)
    return encoder, jax.device_get(initial_encoder_variables(encoder, '', seed=3))


def assert_same(a, b):
    pairs = zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b))
    for (path_a, x), (path_b, y) in pairs:
        assert path_a == path_b
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_gsvit_pytorch_file_with_decoder_keys(tmp_path, encoder_and_variables):
    encoder, variables = encoder_and_variables
    state_dict = {k: torch.from_numpy(np.asarray(v)) for k, v in
                  to_torch(variables, 'gsvit').items()}
    state_dict['decoder.fc.weight'] = torch.zeros(3, 2)  # the autoencoder's decoder is dropped
    torch.save(state_dict, tmp_path / 'GSViT.pkl')
    assert_same(load_encoder_variables(str(tmp_path / 'GSViT.pkl'), encoder), variables)


def test_pretraining_style_orbax_checkpoint(tmp_path, encoder_and_variables):
    encoder, variables = encoder_and_variables
    state = {'params': {'evit': variables['params'], 'decoder': {'w': np.zeros(4, np.float32)}},
             'batch_stats': {'evit': variables['batch_stats'], 'decoder': {}}, 'step': np.int32(7)}
    checkpointer = Checkpointer(tmp_path, async_save=False)
    checkpointer.save(7, state, None, force=True)
    checkpointer.close()
    assert_same(load_encoder_variables(str(tmp_path), encoder), variables)


def test_weights_of_another_variant_are_refused(tmp_path, encoder_and_variables):
    _, variables = encoder_and_variables
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in
                to_torch(variables, 'gsvit').items()}, tmp_path / 'm0.pth')
    with pytest.raises(StateDictMismatchError):
        load_encoder_variables(str(tmp_path / 'm0.pth'), build_encoder('m1', 64))


def test_fingerprint_follows_weights_and_settings(encoder_and_variables):
    _, variables = encoder_and_variables
    base = fingerprint(variables, variant='m0', image_size=64)
    assert base == fingerprint(variables, variant='m0', image_size=64)
    assert base != fingerprint(variables, variant='m0', image_size=224)
    changed = jax.tree_util.tree_map(lambda x: x, variables)
    changed['params']['patch_embed']['0']['c']['kernel'] = (
        np.asarray(changed['params']['patch_embed']['0']['c']['kernel']) + 1e-6)
    assert base != fingerprint(changed, variant='m0', image_size=64)


def test_ragged_batches_are_padded_to_few_sizes():
    """The last batch of each split is ragged: padding to powers of two (a multiple of the device
    count) keeps the compiled programs to a few sizes."""
    assert [padded_size(n, 4) for n in (1, 3, 4, 5, 48, 56, 64, 100, 256)] == [
        4, 4, 4, 8, 64, 64, 64, 128, 256]
    assert [padded_size(n, 1) for n in (1, 2, 3, 5)] == [1, 2, 4, 8]
    assert padded_size(5, 6) == 12
    assert len({padded_size(n, 8) for n in range(1, 257)}) == 6  # 8, 16, ..., 256
