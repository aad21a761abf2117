"""The 2-D latent map: PCA recovers known main axes, and the scatter picture shows every label."""
import numpy as np
import pytest

from gsvit_jax.embed.latent_map import PALETTE, pca_2d, scatter_picture


def test_pca_recovers_the_two_main_axes_of_rotated_data():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=200), rng.normal(size=200)
    a, b = a - a.mean(), b - b.mean()
    b -= (a @ b) / (a @ a) * a  # uncorrelated in the sample too: the axes are exactly a and b
    planted = np.zeros((200, 6))
    planted[:, 0], planted[:, 1] = 10 * a, 2 * b
    planted += 0.01 * rng.normal(size=planted.shape)
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    points, explained = pca_2d(planted @ rotation + 5.0)  # rotated and shifted
    assert abs(np.corrcoef(points[:, 0], a)[0, 1]) > 0.9999
    assert abs(np.corrcoef(points[:, 1], b)[0, 1]) > 0.9999
    expected = np.array([100 * a.var(), 4 * b.var()]) / (100 * a.var() + 4 * b.var())
    np.testing.assert_allclose(explained, expected, atol=1e-4)
    assert np.all(points[np.abs(points).argmax(axis=0), [0, 1]] > 0)  # signs fixed


def test_pca_refuses_a_single_latent():
    with pytest.raises(ValueError, match=r'\(1, 3\)'):
        pca_2d(np.ones((1, 3)))


def test_scatter_picture_draws_each_label_in_its_colour():
    points = np.array([[0.0, 0.0], [1.0, 1.0], [0.5, 0.2]])
    picture = scatter_picture(points, ['video01', 'video02', 'video01'], 'map', size=200)
    assert picture.dtype == np.uint8 and picture.shape[:2] == (224, 200 + 12 + 7 * 7)
    for colour in PALETTE[:2]:
        assert np.all(picture == colour, axis=-1).sum() > 20  # dots and legend boxes
    assert not np.all(picture == PALETTE[2], axis=-1).any()
    with pytest.raises(ValueError, match='3 points but 2 labels'):
        scatter_picture(points, ['a', 'b'], 'map')
