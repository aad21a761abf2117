"""Frame preprocessing: explicit channel order, [0, 1] scaling, PyTorch-equal bilinear resize."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gsvit_jax.preprocess import preprocess


def test_rgb_frames_become_bgr_and_bgr_frames_stay():
    frame = np.zeros((224, 224, 3), np.uint8)
    frame[..., 0] = 255  # pure red in RGB
    rgb = np.asarray(preprocess(frame, channel_order='rgb'))
    assert rgb.shape == (1, 224, 224, 3)
    np.testing.assert_array_equal(rgb[0, 0, 0], [0.0, 0.0, 1.0])  # red is the last BGR channel
    np.testing.assert_array_equal(np.asarray(preprocess(frame, channel_order='bgr'))[0, 0, 0],
                                  [1.0, 0.0, 0.0])


def test_resize_equals_torch_interpolate_from_the_original_144x256_frames():
    frames = np.random.default_rng(0).integers(0, 256, (2, 144, 256, 3), dtype=np.uint8)
    ours = np.asarray(preprocess(frames, channel_order='bgr'))
    x = torch.from_numpy(frames.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    reference = F.interpolate(x, size=(224, 224), mode='bilinear', align_corners=False)
    np.testing.assert_allclose(ours, reference.numpy().transpose(0, 2, 3, 1), atol=1e-6)


def test_bad_inputs_are_refused_with_the_reason():
    with pytest.raises(TypeError):
        preprocess(np.zeros((8, 8, 3), np.uint8))  # channel order is required
    with pytest.raises(ValueError, match="channel_order must be 'rgb' or 'bgr'"):
        preprocess(np.zeros((8, 8, 3), np.uint8), channel_order='RGB')
    with pytest.raises(ValueError, match='expected uint8'):
        preprocess(np.zeros((8, 8, 3), np.float32), channel_order='rgb')
    with pytest.raises(ValueError, match=r'expected frames \(H, W, 3\)'):
        preprocess(np.zeros((8, 8), np.uint8), channel_order='rgb')
