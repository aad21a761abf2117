"""Pre-training's prediction PNG: a header row names the columns (input | predicted | target |
error) above one row of panels per example, so the picture reads without the docs."""
import numpy as np
from PIL import Image

from gsvit_jax.train.pictures import COLUMNS, prediction_grid, save_png


def test_columns_are_labelled_above_the_panels(tmp_path):
    rng = np.random.default_rng(0)
    inputs, predictions, targets = (rng.random((3, 64, 64, 3), np.float32) for _ in range(3))
    grid = prediction_grid(inputs, predictions, targets, rows=2)
    header = grid.shape[0] - 2 * 64
    assert COLUMNS == ('input', 'predicted', 'target', 'error x4')
    assert 8 <= header <= 30 and grid.shape[1:] == (4 * 64, 3)
    labels = [grid[:header, i * 64:(i + 1) * 64] for i in range(4)]
    for label in labels:  # dark text on white, inside its own column
        assert (label < 100).all(axis=-1).any() and (label[:, [0, -1]] == 255).all()
    assert len({label.tobytes() for label in labels}) == 4
    first_row = grid[header:header + 64]
    rgb = (np.clip(inputs[0][..., ::-1] * 255, 0, 255)).astype(np.uint8)  # panels are RGB
    np.testing.assert_array_equal(first_row[:, :64], rgb)
    path = save_png(grid, tmp_path / 'images' / 'step_0000001.png')
    np.testing.assert_array_equal(np.asarray(Image.open(path)), grid)


def test_labels_scale_with_the_panels():
    frames = np.zeros((1, 224, 224, 3), np.float32)
    small = prediction_grid(frames[:, :64, :64], frames[:, :64, :64], frames[:, :64, :64])
    large = prediction_grid(frames, frames, frames)
    assert large.shape[0] - 224 > small.shape[0] - 64
