"""Cholec80 phase metrics against numbers computed by hand (arithmetic in the comments)."""
import math

import numpy as np
import pytest

from gsvit_jax.phase.metrics import (VideoScores, aggregate, confusion_matrix, evaluate_predictions,
                                     relaxed_video_scores, strict_video_scores)

NAN = math.nan


def assert_scores(actual, expected):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=0, atol=1e-9)


def late(first_len, pred_extra, total):
    """gt: `first_len` frames of 0 then 1s; pred switches `pred_extra` frames later."""
    gt = [0] * first_len + [1] * (total - first_len)
    pred = [0] * (first_len + pred_extra) + [1] * (total - first_len - pred_extra)
    return np.array(gt), np.array(pred)


# ---------------------------------------------------------------------------------- strict


def test_perfect_prediction_strict_and_relaxed():
    gt = np.array([0, 0, 1, 1, 1, 2])
    for scores in (strict_video_scores(gt, gt), relaxed_video_scores(gt, gt)):
        assert scores.accuracy == 100.0
        for values in (scores.precision, scores.recall, scores.jaccard, scores.f1):
            assert_scores(values, [100, 100, 100, NAN, NAN, NAN, NAN])  # phases 3..6 absent


def test_strict_scores_with_a_phase_predicted_but_absent_from_gt():
    gt = [0, 0, 0, 1, 1, 1, 1, 2]
    pred = [0, 0, 1, 1, 1, 3, 3, 2]
    s = strict_video_scores(gt, pred)
    assert s.accuracy == 62.5  # frames 0,1,3,4,7 right: 5/8
    # phase 0: TP 2, FP 0, FN 1; phase 1: TP 2 (3,4), FP 1 (2), FN 2 (5,6);
    # phase 2: TP 1; phase 3: TP 0, FP 2, FN 0 (absent from gt); phases 4..6 absent from both.
    assert_scores(s.precision, [100, 200 / 3, 100, 0, NAN, NAN, NAN])  # 2/2, 2/3, 1/1, 0/2
    assert_scores(s.recall, [200 / 3, 50, 100, NAN, NAN, NAN, NAN])  # 2/3, 2/4, 1/1, 0/0
    assert_scores(s.jaccard, [200 / 3, 40, 100, 0, NAN, NAN, NAN])  # 2/3, 2/5, 1/1, 0/2
    assert_scores(s.f1, [80, 400 / 7, 100, 0, NAN, NAN, NAN])  # 4/5, 4/7, 2/2, 0/2


def test_relaxed_scores_same_video_clip_precision_and_ignore_phase_absent_from_gt():
    gt = [0, 0, 0, 1, 1, 1, 1, 2]
    pred = [0, 0, 1, 1, 1, 3, 3, 2]
    r = relaxed_video_scores(gt, pred)
    # diff = pred - gt = [0,0,1,0,0,2,2,0]. Segment of 0 = frames 0..2, t = 3: the +1 at its end
    # is forgiven. Segment of 1 = frames 3..6: +2 is not tolerated for phase 1. -> 6/8 correct.
    assert r.accuracy == 75.0
    # phase 0: union {0,1,2}, tp 3: J 3/3, P 3/2 = 150 -> clipped 100, R 3/3.
    # phase 1: union {2..6}, relaxed diff there [0,0,0,2,2], tp 3: J 3/5, P 3/3, R 3/4,
    #          F1 = 2*100*75/175 = 85.714...
    # phase 3 is predicted but absent from gt: NaN, like every phase absent from gt.
    assert_scores(r.jaccard, [100, 60, 100, NAN, NAN, NAN, NAN])
    assert_scores(r.precision, [100, 100, 100, NAN, NAN, NAN, NAN])
    assert_scores(r.recall, [100, 75, 100, NAN, NAN, NAN, NAN])
    assert_scores(r.f1, [100, 15000 / 175, 100, NAN, NAN, NAN, NAN])


def test_single_phase_video():
    gt = [2, 2, 2, 2, 2]
    pred = [2, 2, 2, 1, 2]
    s = strict_video_scores(gt, pred)
    assert s.accuracy == 80.0  # 4/5
    # phase 2: TP 4, FP 0, FN 1 -> P 100, R 80, J 80, F1 8/9; phase 1: TP 0, FP 1 -> P 0, J 0.
    assert_scores(s.precision, [NAN, 0, 100, NAN, NAN, NAN, NAN])
    assert_scores(s.recall, [NAN, NAN, 80, NAN, NAN, NAN, NAN])
    assert_scores(s.jaccard, [NAN, 0, 80, NAN, NAN, NAN, NAN])
    assert_scores(s.f1, [NAN, 0, 800 / 9, NAN, NAN, NAN, NAN])
    r = relaxed_video_scores(gt, pred)
    # diff [0,0,0,-1,0]; the segment (5 frames) is shorter than 10 s, t = 5: the -1 is forgiven.
    assert r.accuracy == 100.0
    # phase 2: union 5 frames, tp 5: J 100, P 5/4 = 125 -> 100, R 100.
    assert_scores(r.precision, [NAN, NAN, 100, NAN, NAN, NAN, NAN])
    assert_scores(r.jaccard, [NAN, NAN, 100, NAN, NAN, NAN, NAN])


# ------------------------------------------------------------------------ relaxed boundary


def test_late_transition_inside_the_window_is_tolerated():
    gt, pred = late(15, 5, 35)  # pred still says 0 during frames 15..19 of phase 1
    assert strict_video_scores(gt, pred).accuracy == pytest.approx(3000 / 35)  # 30/35
    r = relaxed_video_scores(gt, pred)
    assert r.accuracy == 100.0  # the five -1 lie in the first 10 frames of phase 1
    # phase 0: union {0..19}, tp 20: P 20/20, R 20/15 = 133.3 -> 100.
    # phase 1: union {15..34}, tp 20: P 20/15 -> 100, R 20/20.
    assert_scores(r.precision[:2], [100, 100])
    assert_scores(r.recall[:2], [100, 100])
    assert_scores(r.jaccard[:2], [100, 100])


def test_late_transition_outside_the_window_is_not_tolerated():
    gt, pred = late(15, 12, 35)  # -1 during frames 15..26, the window covers 15..24
    assert strict_video_scores(gt, pred).accuracy == pytest.approx(2300 / 35)  # 23/35
    r = relaxed_video_scores(gt, pred)
    assert r.accuracy == pytest.approx(3300 / 35)  # frames 25, 26 stay wrong: 33/35
    # phase 0: union {0..26} (27), tp 25: J 25/27, P 25/27, R 25/15 -> 100.
    # phase 1: union {15..34} (20), tp 18: J 18/20 = 90, P 18/8 -> 100, R 18/20 = 90.
    assert_scores(r.jaccard[:2], [2500 / 27, 90])
    assert_scores(r.precision[:2], [2500 / 27, 100])
    assert_scores(r.recall[:2], [100, 90])
    # at 2 fps the window is 20 frames and covers all 12 late frames
    assert relaxed_video_scores(gt, pred, fps=2).accuracy == 100.0


def test_two_phase_jump_at_the_start_only_tolerated_for_phases_6_and_7():
    gt = np.array([0] * 5 + [2] * 5 + [3] * 5 + [5] * 5)
    pred = np.array([0] * 5 + [0] * 2 + [2] * 3 + [3] * 5 + [3] * 2 + [5] * 3)
    # diff -2 at frames 5, 6 (phase 2 = Matlab id 3: not tolerated) and at frames 15, 16
    # (phase 5 = CleaningCoagulation, Matlab id 6: tolerated).
    assert strict_video_scores(gt, pred).accuracy == 80.0  # 16/20
    r = relaxed_video_scores(gt, pred)
    assert r.accuracy == 90.0  # 18/20
    # phase 0: union {0..6}, tp 5 (5, 6 wrong): J 5/7, P 5/7, R 5/5, F1 = 2PR/(P+R) = 250/3.
    # phase 2: union {5..9}, tp 3: J 3/5, P 3/3, R 3/5, F1 2*100*60/160 = 75.
    # phase 3: union {10..16}, tp 7: J 100, P 7/7, R 7/5 -> 100.
    # phase 5: union {15..19}, tp 5: J 100, P 5/3 -> 100, R 100.
    assert_scores(r.jaccard, [500 / 7, NAN, 60, 100, NAN, 100, NAN])
    assert_scores(r.precision, [500 / 7, NAN, 100, 100, NAN, 100, NAN])
    assert_scores(r.recall, [100, NAN, 60, 100, NAN, 100, NAN])
    assert_scores(r.f1, [250 / 3, NAN, 75, 100, NAN, 100, NAN])
    # the same -2 at the start of GallbladderDissection (index 3, Matlab id 4) is not forgiven
    gt = np.array([1] * 5 + [3] * 5)
    pred = np.array([1] * 7 + [3] * 3)
    assert relaxed_video_scores(gt, pred).accuracy == 80.0  # 8/10


def test_early_transition_matlab_quirk_versus_intended_rule():
    gt = np.array([0] * 20 + [1] * 10)
    pred = np.array([0] * 7 + [4] * 2 + [0] * 8 + [1] * 13)
    # diff: +4 at frames 7, 8 (a real error), +1 at frames 17..19 (early switch to phase 1).
    # Segment of 0 = frames 0..19, t = 10; the end mask over frames 10..19 is true at i = 7,8,9.
    assert strict_video_scores(gt, pred).accuracy == pytest.approx(2500 / 30)  # 25/30
    quirk = relaxed_video_scores(gt, pred)  # default matlab_quirk=True
    # Matlab zeroes curDiff(7..9 0-based) = frames 7, 8, 9: the +4 error is forgiven and the
    # early frames 17..19 stay wrong: 27/30.
    assert quirk.accuracy == 90.0
    # phase 0: union {0..19}, tp 17: J 85, P 17/15 -> 100, R 85, F1 2*100*85/185.
    # phase 1: union {17..29} (13), tp 10: J 10/13, P 10/13, R 10/10; phase 4: absent -> NaN.
    assert_scores(quirk.jaccard[:2], [85, 1000 / 13])
    assert_scores(quirk.precision[:2], [100, 1000 / 13])
    assert_scores(quirk.recall[:2], [85, 100])
    assert_scores(quirk.f1[:2], [17000 / 185, 2 * (1000 / 13) * 100 / (1000 / 13 + 100)])
    assert math.isnan(quirk.precision[4])
    intended = relaxed_video_scores(gt, pred, matlab_quirk=False)
    # frames 17..19 forgiven, frames 7, 8 stay wrong: 28/30.
    assert intended.accuracy == pytest.approx(2800 / 30)
    # phase 0: tp 18: J 90, P 18/15 -> 100, R 90; phase 1: tp 13: J 100, P 100, R 13/10 -> 100.
    assert_scores(intended.jaccard[:2], [90, 100])
    assert_scores(intended.precision[:2], [100, 100])
    assert_scores(intended.recall[:2], [90, 100])


def test_segment_shorter_than_the_window_is_relaxed_at_both_ends():
    gt = np.array([0] * 12 + [1] * 3 + [2] * 12)
    pred = np.array([0] * 12 + [0, 2, 1] + [2] * 12)
    # phase-1 segment = frames 12..14, t = 3, diff [-1, +1, 0]: -1 late, +1 early, both forgiven;
    # with t == length the quirky and the intended end rule coincide.
    assert strict_video_scores(gt, pred).accuracy == pytest.approx(2500 / 27)  # 25/27
    for matlab_quirk in (True, False):
        assert relaxed_video_scores(gt, pred, matlab_quirk=matlab_quirk).accuracy == 100.0


def test_relaxed_precision_of_a_never_predicted_phase_is_inf_clipped_or_nan():
    gt = np.array([0] * 5 + [1] * 3 + [2] * 5)
    pred = np.array([0] * 8 + [2] * 5)
    r = relaxed_video_scores(gt, pred)
    # phase 1 never predicted; its 3 frames (diff -1, late) are forgiven: tp 3, P = 300/0 = inf
    # -> clipped 100; R = 3/3 = 100. Phase 0: union {0..7}, tp 8: P 8/8, R 8/5 -> 100.
    assert_scores(r.precision[:3], [100, 100, 100])
    assert_scores(r.recall[:3], [100, 100, 100])
    r = relaxed_video_scores([0] * 5 + [1] * 3, [0] * 5 + [3] * 3)
    # phase 1: diff +2 not tolerated, tp 0, P = 0/0 = NaN, R = 0/3 = 0, F1 NaN (P is NaN).
    assert math.isnan(r.precision[1]) and r.recall[1] == 0 and math.isnan(r.f1[1])
    assert r.precision[0] == 100  # union {0..4}, tp 5: 5/5
    assert r.recall[0] == 100


# ------------------------------------------------------------------------------ aggregation


def video(accuracy, precision, recall, jaccard, f1):
    return VideoScores(accuracy, *(np.array(v, np.float64) for v in (precision, recall, jaccard,
                                                                       f1)))


VIDEOS = [
    video(80, [100, 50, NAN], [80, 60, NAN], [80, 40, NAN], [80, 40, NAN]),
    video(90, [90, NAN, NAN], [70, NAN, NAN], [60, NAN, NAN], [60, NAN, NAN]),
]


def test_aggregate_matlab_main_m_semantics():
    a = aggregate(VIDEOS, matlab=True)
    assert a['num_videos'] == 2
    assert a['accuracy_mean'] == 85.0
    assert a['accuracy_std'] == pytest.approx(math.sqrt(50))  # (5^2 + 5^2) / (2 - 1)
    # per phase nanmean over videos: precision [95, 50, NaN]; nanmean 72.5, nanstd 22.5*sqrt 2
    assert_scores(a['precision_per_phase'], [95, 50, NAN])
    assert a['precision_mean'] == 72.5
    assert a['precision_std'] == pytest.approx(22.5 * math.sqrt(2))
    # recall [75, 60, NaN] and jaccard [70, 40, NaN]: Main.m's plain mean -> NaN (quirk)
    assert_scores(a['recall_per_phase'], [75, 60, NAN])
    for key in ('recall_mean', 'recall_std', 'jaccard_mean', 'jaccard_std'):
        assert math.isnan(a[key]), key
    # f1 [70, 40, NaN] follows precision: nanmean 55, nanstd 15*sqrt 2
    assert a['f1_mean'] == 55.0
    assert a['f1_std'] == pytest.approx(15 * math.sqrt(2))
    assert 'f1_video_mean' not in a


def test_aggregate_strict_protocol_nan_aware_with_video_level():
    a = aggregate(VIDEOS, matlab=False)
    assert a['accuracy_std'] == pytest.approx(math.sqrt(50))
    assert a['recall_mean'] == 67.5  # nanmean of [75, 60, NaN]
    assert a['recall_std'] == pytest.approx(7.5 * math.sqrt(2))
    assert a['jaccard_mean'] == 55.0  # [70, 40, NaN]
    assert a['jaccard_std'] == pytest.approx(15 * math.sqrt(2))
    # video level F1: video 1 nanmean(80, 40) = 60, video 2 60 -> 60 ± 0
    assert a['f1_video_mean'] == 60.0
    assert a['f1_video_std'] == 0.0
    # video level precision: (100 + 50) / 2 = 75 and 90 -> 82.5 ± 7.5*sqrt 2
    assert a['precision_video_mean'] == 82.5
    assert a['precision_video_std'] == pytest.approx(7.5 * math.sqrt(2))
    assert all(isinstance(v, float) for v in a['f1_per_phase'])


def test_aggregate_single_video_std_matlab_zero_strict_nan():
    assert aggregate(VIDEOS[:1], matlab=True)['accuracy_std'] == 0.0  # Matlab std of a scalar
    assert math.isnan(aggregate(VIDEOS[:1], matlab=False)['accuracy_std'])


# ---------------------------------------------------------------- confusion and evaluation


def test_confusion_matrix_counts():
    cm = confusion_matrix([np.array([0, 0, 1, 2]), np.array([6, 6])],
                          [np.array([0, 1, 1, 0]), np.array([6, 5])])
    expected = np.zeros((7, 7), np.int64)
    expected[0, 0] = expected[0, 1] = expected[1, 1] = expected[2, 0] = 1
    expected[6, 6] = expected[6, 5] = 1
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, expected)


def test_evaluate_predictions_end_to_end():
    gt = {'video02': np.array([2, 2, 2, 2, 2]), 'video01': np.array([0, 0, 0, 1, 1, 1, 1, 2])}
    pred = {'video02': np.array([2, 2, 2, 1, 2]), 'video01': np.array([0, 0, 1, 1, 1, 3, 3, 2])}
    out = evaluate_predictions(gt, pred)
    assert out['num_videos'] == 2 and out['num_frames'] == 13
    assert list(out['per_video']) == ['video01', 'video02']
    v1, v2 = out['per_video']['video01'], out['per_video']['video02']
    assert (v1['strict_accuracy'], v1['relaxed_accuracy']) == (62.5, 75.0)
    assert (v2['strict_accuracy'], v2['relaxed_accuracy']) == (80.0, 100.0)
    # strict F1 video01: mean(80, 400/7, 100, 0) = (180 + 400/7) / 4; video02: mean(0, 800/9)
    assert v1['strict_f1'] == pytest.approx((180 + 400 / 7) / 4)
    assert v2['strict_f1'] == pytest.approx(400 / 9)
    assert out['strict']['accuracy_mean'] == pytest.approx(71.25)  # (62.5 + 80) / 2
    assert out['relaxed']['accuracy_mean'] == pytest.approx(87.5)  # (75 + 100) / 2
    assert out['relaxed']['accuracy_std'] == pytest.approx(math.sqrt(2 * 12.5 ** 2))
    assert out['confusion_matrix'][0] == [2, 1, 0, 0, 0, 0, 0]  # video01 frames 0..2
    assert out['confusion_matrix'][1] == [0, 2, 0, 2, 0, 0, 0]  # video01 frames 3..6
    assert out['confusion_matrix'][2] == [0, 1, 5, 0, 0, 0, 0]  # 1 + 4 right, 1 as 1
    assert sum(map(sum, out['confusion_matrix'])) == 13


@pytest.mark.parametrize('gt, pred, match', [
    ({'v1': [0, 1]}, {'v2': [0, 1]}, r"only in gt: \['v1'\], only in pred: \['v2'\]"),
    ({'v1': [0, 1, 1]}, {'v1': [0, 1]}, "video 'v1': gt has 3 frames but pred has 2"),
    ({'v1': [0, 7]}, {'v1': [0, 1]}, r"gt\['v1'\]: expected phase labels in 0..6, got 7"),
    ({'v1': [0, 1]}, {'v1': [0.0, 1.0]}, r"pred\['v1'\]: expected integer phase labels"),
    ({'v1': [[0, 1]]}, {'v1': [[0, 1]]}, r"expected a non-empty 1-D sequence.*shape \(1, 2\)"),
    ({}, {}, 'at least one video'),
])
def test_evaluate_predictions_rejects_bad_input(gt, pred, match):
    with pytest.raises(ValueError, match=match):
        evaluate_predictions({k: np.array(v) for k, v in gt.items()},
                             {k: np.array(v) for k, v in pred.items()})


def test_video_scores_reject_bad_input():
    with pytest.raises(ValueError, match='same length, got 3 and 2'):
        strict_video_scores([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match='got -1 at frame 1'):
        relaxed_video_scores([0, 1], [0, -1])
    with pytest.raises(ValueError, match='at least one VideoScores'):
        aggregate([], matlab=True)
