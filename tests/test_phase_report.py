"""Cholec80 phase report (Markdown + JSON) and pictures (timelines, confusion matrix)."""
import json

import numpy as np
import pytest

from gsvit_jax.phase.metrics import evaluate_predictions
from gsvit_jax.phase.pictures import PHASE_COLORS, confusion_matrix_image, phase_timelines
from gsvit_jax.phase.report import (RELAXED_HEADING, STRICT_HEADING, table1_markdown,
                                    write_report)

GT = {'video01': np.array([0, 0, 0, 1, 1, 1, 1, 2]), 'video02': np.array([2, 2, 2, 2, 2])}
PRED = {'video01': np.array([0, 0, 1, 1, 1, 3, 3, 2]), 'video02': np.array([2, 2, 2, 1, 2])}
LABEL = 'generated Cholec80-layout data — NOT Cholec80'


@pytest.fixture
def results():
    head = evaluate_predictions(GT, PRED)
    head['strict'].update(accuracy_mean=86.34, accuracy_std=5.91, precision_mean=82.46,
                          precision_std=7.08, recall_mean=float('nan'))
    temporal = evaluate_predictions(GT, GT)
    return {'GSViT single-frame head': head, 'GSViT + causal temporal model': temporal}


def test_markdown_tables(results):
    text = table1_markdown(results, split='test', data_label=LABEL,
                           params={'GSViT single-frame head': 13_700_000})
    assert text.index(STRICT_HEADING) < text.index(RELAXED_HEADING)
    assert text.count(LABEL) == 4 and text.count('Split `test`') == 4  # 4 tables
    assert '2 videos, 13 frames at 1 fps' in text
    strict, relaxed = text.split(RELAXED_HEADING)
    # overridden numbers, one decimal; NaN recall -> '–'
    assert '| GSViT single-frame head | 86.3 ± 5.9 | 82.5 ± 7.1 | – |' in strict
    assert ('| Model | Accuracy | Precision | Recall | Jaccard | F1 | F1 (video-level) | Params |'
            in strict)
    assert '| Model | Accuracy | Precision | Recall | Jaccard | F1 | Params |' in relaxed
    # relaxed, from the data: accuracy 75 and 100 -> 87.5 ± 12.5*sqrt 2 = 17.68; precision per
    # phase [100, 100, 100, NaN x4] -> nanmean 100 ± 0; recall/Jaccard: Main.m mean over a NaN
    # phase -> '–'; F1 per phase [100, 85.71, 100] -> 95.24 ± 8.25 (deviations 100/21, 200/21)
    assert ('| GSViT single-frame head | 87.5 ± 17.7 | 100.0 ± 0.0 | – | – | 95.2 ± 8.2 '
            '| 13.7M |') in relaxed
    assert '| GSViT + causal temporal model | 100.0 ± 0.0 |' in relaxed
    # per-phase strict, head: Preparation P nanmean(100, NaN), R 2/3, J 2/3, F1 4/5;
    # CalotTriangleDissection P mean(66.7, 0) = 33.3; GallbladderPackaging absent everywhere
    assert '| Preparation | 100.0 | 66.7 | 66.7 | 80.0 | 100.0 |' in relaxed
    assert '| CalotTriangleDissection | 33.3 | 50.0 | 20.0 | 28.6 |' in relaxed
    assert '| GallbladderPackaging | – | – | – | – | – | – | – | – |' in relaxed
    # per video, head: video01 strict 5/8 = 62.5; relaxed also forgives second 2 (+1 at the end
    # of the 3-s Preparation segment, all inside the window) but not seconds 5-6 (+2) -> 6/8 = 75.
    # video02 strict 4/5 = 80; relaxed: its 5-s segment is all window, the -1 (late) is forgiven
    assert '| video01 | 8 | 62.5 | 75.0 |' in relaxed
    assert '| video02 | 5 | 80.0 | 100.0 |' in relaxed


def test_markdown_refuses_models_scored_on_different_videos(results):
    results['other'] = evaluate_predictions({'video01': GT['video01']},
                                            {'video01': PRED['video01']})
    with pytest.raises(ValueError, match='different videos'):
        table1_markdown(results, split='test', data_label=LABEL)


def _refuse(constant):
    raise ValueError(f'not strict JSON: {constant}')


def test_write_report_strict_json_round_trip(results, tmp_path):
    paths = write_report(results, tmp_path / 'out', split='val', data_label=LABEL)
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['report.json', 'report.md']
    loaded = json.loads(paths['json'].read_text(), parse_constant=_refuse)
    assert loaded['split'] == 'val' and loaded['data_label'] == LABEL
    head = loaded['results']['GSViT single-frame head']
    assert head['strict']['recall_mean'] is None  # NaN -> null
    assert head['strict']['precision_per_phase'][4] is None
    assert head['relaxed']['accuracy_mean'] == 87.5
    assert head['confusion_matrix'][1] == [0, 2, 0, 2, 0, 0, 0]
    assert paths['markdown'].read_text() == table1_markdown(
        loaded['results'], split='val', data_label=LABEL)


def _find(image, colour):
    return np.argwhere((image == np.array(colour, np.uint8)).all(-1))  # (y, x) rows


def test_phase_timelines_pixels_and_layout():
    gt = {'b': np.array([1] * 50), 'a': np.array([0] * 30 + [2] * 70)}
    pred = {'b': np.array([1] * 25 + [4] * 25), 'a': np.array([0] * 40 + [3] * 60)}
    image = phase_timelines(gt, pred, width=100)  # longest video 100 s -> 1 px per second
    assert image.dtype == np.uint8 and image.shape[2] == 3
    c = [np.array(colour, np.uint8) for colour in PHASE_COLORS]
    white = np.array([255, 255, 255], np.uint8)
    y_gt = _find(image, c[2])[:, 0].min()  # 'a' is drawn first; phase 2 only in its GT ribbon
    x0 = _find(image[y_gt:y_gt + 1], c[0])[:, 1].min()  # frame 0 of the GT ribbon
    for frame, phase in ((0, 0), (29, 0), (30, 2), (99, 2)):
        assert (image[y_gt, x0 + frame] == c[phase]).all(), frame
    assert (image[y_gt, x0 + 100] == white).all()
    y_pred = y_gt + 1 + np.flatnonzero((image[y_gt + 1:, x0 + 50] == c[3]).all(-1))[0]
    for frame, phase in ((0, 0), (35, 0), (39, 0), (40, 3), (99, 3)):
        assert (image[y_pred, x0 + frame] == c[phase]).all(), frame
    y_b = _find(image, c[4])[:, 0].min()  # 'b' pred ribbon, below 'a'
    assert y_b > y_pred
    for frame, phase in ((24, 1), (25, 4), (49, 4)):
        assert (image[y_b, x0 + frame] == c[phase]).all(), frame
    assert (image[y_b, x0 + 50] == white).all()  # 50 s video spans 50 px: common time scale
    assert len(_find(image, c[5])) and len(_find(image, c[6]))  # only in the legend


def test_phase_timelines_size_relations():
    videos = {f'v{i}': np.array([0] * 10 + [1] * 10 * i) for i in range(1, 4)}
    heights = [phase_timelines({k: videos[k] for k in list(videos)[:n]},
                               {k: videos[k] for k in list(videos)[:n]}, width=300).shape[0]
               for n in (1, 2, 3)]
    assert heights[1] - heights[0] == heights[2] - heights[1] > 28  # two 14-px ribbons a video
    width_300 = phase_timelines(videos, videos, width=300).shape[1]
    assert phase_timelines(videos, videos, width=500).shape[1] == width_300 + 200
    # longest video 40 s at 0.2 s per px -> 200 px, like width=200
    assert (phase_timelines(videos, videos, seconds_per_pixel=0.2).shape[1]
            == phase_timelines(videos, videos, width=200).shape[1])


def _cells(image):
    """Colour of every cell's top-left corner (free of text), grid found from a diagonal map."""
    dark = (image[..., 2].astype(int) - image[..., 0] > 50) & (image[..., 0] < 60)
    ys, xs = np.nonzero(dark)
    pitch_y, pitch_x = (ys.max() - ys.min() + 1) / 7, (xs.max() - xs.min() + 1) / 7
    assert pitch_y.is_integer() and pitch_x.is_integer()
    return ys.min(), xs.min(), int(pitch_y), int(pitch_x)


def _luminance(image, grid, i, j):
    y0, x0, py, px = grid
    return image[y0 + i * py + 2, x0 + j * px + 2].astype(int).sum()


def test_confusion_matrix_image_colours():
    diagonal = np.diag([5, 3, 8, 1, 2, 4, 6]).astype(np.int64)
    image = confusion_matrix_image(diagonal)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    grid = _cells(image)
    assert grid[2] >= 30 and grid[3] >= 50  # room for "100.0%" and a count
    assert image.shape[0] > grid[0] + 7 * grid[2] and image.shape[1] > grid[1] + 7 * grid[3]
    lum = np.array([[_luminance(image, grid, i, j) for j in range(7)] for i in range(7)])
    assert (np.diag(lum) == lum[0, 0]).all()  # every row 100 % on the diagonal
    assert (lum[~np.eye(7, dtype=bool)] == 3 * 255).all()  # 0 % -> white
    # row-normalised shades: row 0 = [3, 1, 0, ...] -> 75 % darker than 25 % darker than 0 %
    mixed = diagonal.copy()
    mixed[0, :2] = [3, 1]
    image = confusion_matrix_image(mixed)
    assert (_luminance(image, grid, 0, 0) < _luminance(image, grid, 0, 1)
            < _luminance(image, grid, 0, 2) == 3 * 255)
    # normalize=False: shade by count, 8 > 5 > 3
    image = confusion_matrix_image(diagonal, normalize=False)
    assert (_luminance(image, grid, 2, 2) < _luminance(image, grid, 0, 0)
            < _luminance(image, grid, 1, 1))


def test_confusion_matrix_image_rejects_bad_matrix():
    with pytest.raises(ValueError, match=r'expected a \(7, 7\) matrix'):
        confusion_matrix_image(np.zeros((6, 6), np.int64))
