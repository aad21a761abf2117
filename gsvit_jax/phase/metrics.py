"""Cholec80 phase-recognition metrics: strict (frame-exact) and relaxed (M2CAI Matlab script).

Both protocols are reported because papers disagree (datasets spec §1.6): the relaxed 10-s
boundary metric of the M2CAI/Cholec80 Matlab script (`Evaluate.m` + `Main.m`) is what most
tables use, quirks included, while the strict frame-exact F1 averaged over videos is what CAMMA
recommends today. Inputs are per-video 1-fps label sequences of indices into `PHASES`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

from tfds_builders.cholec80.annotations import PHASES

NUM_PHASES = len(PHASES)
METRICS = ('precision', 'recall', 'jaccard', 'f1')

# Relaxed-boundary tolerances of Evaluate.m, keyed by 0-based phase index (Matlab id - 1): the
# prediction-minus-truth values forgiven in the first / last `t` frames of a truth segment.
_GENERAL_TOLERANCE = ((-1,), (1,))
_RELAXED_TOLERANCE = {
    3: ((-1,), (1, 2)),  # GallbladderDissection (Matlab id 4)
    4: ((-1,), (1, 2)),  # GallbladderPackaging (id 5)
    5: ((-1, -2), (1, 2)),  # CleaningCoagulation (id 6)
    6: ((-1, -2), (1, 2)),  # GallbladderRetraction (id 7)
}


@dataclasses.dataclass(frozen=True, eq=False)
class VideoScores:
    """One video's scores in percent (0..100); per-phase arrays have shape (num_phases,)."""
    accuracy: float
    precision: np.ndarray
    recall: np.ndarray
    jaccard: np.ndarray
    f1: np.ndarray


def check_labels(labels: object, what: str, num_phases: int = NUM_PHASES) -> np.ndarray:
    """`labels` as a non-empty 1-D int64 array of phase indices 0..num_phases-1, else ValueError."""
    array = np.asarray(labels)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f'{what}: expected a non-empty 1-D sequence of phase labels '
                         f'(one per second), got shape {array.shape}')
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f'{what}: expected integer phase labels, got dtype {array.dtype}')
    bad = (array < 0) | (array >= num_phases)
    if bad.any():
        raise ValueError(f'{what}: expected phase labels in 0..{num_phases - 1}, got '
                         f'{array[bad][0]} at frame {int(np.flatnonzero(bad)[0])}')
    return array.astype(np.int64)


def _check_pair(gt: object, pred: object, num_phases: int) -> tuple[np.ndarray, np.ndarray]:
    gt = check_labels(gt, 'gt', num_phases)
    pred = check_labels(pred, 'pred', num_phases)
    if len(gt) != len(pred):
        raise ValueError(f'gt and pred must have the same length, got {len(gt)} and {len(pred)}')
    return gt, pred


def _percent(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """100 * n / d with IEEE semantics (0/0 -> NaN, x/0 -> inf), without warnings."""
    with np.errstate(divide='ignore', invalid='ignore'):
        return 100.0 * np.asarray(numerator, np.float64) / np.asarray(denominator, np.float64)


def strict_video_scores(gt: Sequence[int] | np.ndarray, pred: Sequence[int] | np.ndarray,
                        num_phases: int = NUM_PHASES) -> VideoScores:
    """Frame-exact scores of one video.

    Precision is NaN for a phase never predicted, recall NaN for a phase absent from `gt`;
    Jaccard and F1 are NaN only for a phase absent from both (a phase predicted but absent from
    `gt` scores 0, a real error).
    """
    gt, pred = _check_pair(gt, pred, num_phases)
    phases = np.arange(num_phases)[:, None]
    is_gt, is_pred = gt[None] == phases, pred[None] == phases
    tp = (is_gt & is_pred).sum(1)
    fp = (~is_gt & is_pred).sum(1)
    fn = (is_gt & ~is_pred).sum(1)
    return VideoScores(
        accuracy=float(np.mean(gt == pred) * 100.0),
        precision=_percent(tp, tp + fp),
        recall=_percent(tp, tp + fn),
        jaccard=_percent(tp, tp + fp + fn),
        f1=_percent(2 * tp, 2 * tp + fp + fn),
    )


def _segments(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, stop, phase) of every run of equal labels, stop exclusive, in time order."""
    starts = np.concatenate([[0], np.flatnonzero(np.diff(labels)) + 1])
    stops = np.concatenate([starts[1:], [len(labels)]])
    return [(int(a), int(b), int(labels[a])) for a, b in zip(starts, stops)]


def _relax_segment(diff: np.ndarray, phase: int, t: int, matlab_quirk: bool) -> np.ndarray:
    """Evaluate.m's boundary relaxation of one truth segment's pred-minus-truth values.

    The start rule zeroes tolerated "late" values among the first `t` frames. The end rule is
    meant to zero tolerated "early" values among the last `t` frames, but Matlab's
    `curDiff(curDiff(end-t+1:end)==1) = 0` indexes curDiff from its START with that length-t
    mask: position i < t is zeroed whenever position len-t+i holds a tolerated value, and the
    early frames themselves stay wrong. `matlab_quirk=True` reproduces that, False does what
    was intended. The two agree when t equals the segment length.
    """
    late, early = _RELAXED_TOLERANCE.get(phase, _GENERAL_TOLERANCE)
    relaxed = diff.copy()
    head = relaxed[:t]
    head[np.isin(head, late)] = 0
    tail_mask = np.isin(relaxed[len(relaxed) - t:], early)
    target = relaxed[:t] if matlab_quirk else relaxed[len(relaxed) - t:]
    target[tail_mask] = 0
    return relaxed


def _relaxed_f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """Harmonic mean of clipped relaxed P and R: NaN if either is NaN, 0 if both are 0."""
    total = precision + recall
    with np.errstate(divide='ignore', invalid='ignore'):
        f1 = 2.0 * precision * recall / total
    return np.where(total == 0, 0.0, f1)


def relaxed_video_scores(gt: Sequence[int] | np.ndarray, pred: Sequence[int] | np.ndarray,
                         fps: float = 1, boundary_s: float = 10, num_phases: int = NUM_PHASES,
                         matlab_quirk: bool = True) -> VideoScores:
    """Relaxed-boundary scores of one video with the M2CAI/Cholec80 `Evaluate.m` semantics.

    Per truth segment, predictions one phase late in its first `boundary_s * fps` frames or one
    phase early in its last ones count as correct (two phases for GallbladderDissection /
    Packaging at the end, for CleaningCoagulation / GallbladderRetraction at both ends); see
    `_relax_segment` for the end-rule quirk. A frame relaxed for one phase also counts as a true
    positive of the phase it was predicted as, so precision and recall can exceed 100 (or be
    inf, for a phase never predicted); like `Main.m` they are clipped to 100. All three are NaN
    for a phase absent from `gt`. F1 (Surgformer's addition) is computed from the clipped P, R.
    """
    gt, pred = _check_pair(gt, pred, num_phases)
    window = int(round(boundary_s * fps))
    diff = pred - gt
    updated = np.concatenate([
        _relax_segment(diff[start:stop], phase, min(window, stop - start), matlab_quirk)
        for start, stop, phase in _segments(gt)])
    correct = updated == 0
    phases = np.arange(num_phases)[:, None]
    is_gt, is_pred = gt[None] == phases, pred[None] == phases
    tp = ((is_gt | is_pred) & correct[None]).sum(1)
    present = is_gt.any(1)

    def score(denominator: np.ndarray) -> np.ndarray:
        value = np.minimum(_percent(tp, denominator), 100.0)
        return np.where(present, value, np.nan)

    precision, recall = score(is_pred.sum(1)), score(is_gt.sum(1))
    return VideoScores(
        accuracy=float(np.mean(correct) * 100.0),
        precision=precision,
        recall=recall,
        jaccard=score((is_gt | is_pred).sum(1)),
        f1=_relaxed_f1(precision, recall),
    )


def _mean(values: np.ndarray, skip_nan: bool) -> float:
    values = values[~np.isnan(values)] if skip_nan else values
    return float(np.mean(values)) if values.size else math.nan


def _std(values: np.ndarray, skip_nan: bool, matlab: bool) -> float:
    """Sample std (ddof=1); of one value Matlab's `std` gives 0, ours NaN (undefined)."""
    values = values[~np.isnan(values)] if skip_nan else values
    if values.size == 0:
        return math.nan
    if values.size == 1:
        return 0.0 if matlab and not np.isnan(values[0]) else math.nan
    return float(np.std(values, ddof=1))


def _nanmean_rows(values: np.ndarray, axis: int) -> np.ndarray:
    """nanmean along `axis`, NaN (without a warning) where every value is NaN."""
    count = (~np.isnan(values)).sum(axis)
    total = np.nansum(values, axis)
    with np.errstate(invalid='ignore'):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def aggregate(scores: Sequence[VideoScores], *, matlab: bool) -> dict:
    """Summarise videos: accuracy mean ± std across videos; each metric's per-phase value is the
    nanmean over videos, its summary the mean ± std ACROSS PHASES (std with ddof=1).

    `matlab=True` reproduces `Main.m`: precision (and F1) summaries use nanmean/nanstd over
    phases, but Jaccard and recall plain mean/std, so a phase absent from every video makes
    them NaN; the std of a single value is 0. `matlab=False` (strict protocol) uses nan-aware
    statistics everywhere and adds `<metric>_video_mean/_video_std`: per video the nanmean over
    phases, then mean ± std over videos (CAMMA's recommended "F1 averaged over videos").
    """
    if not scores:
        raise ValueError('aggregate: expected at least one VideoScores, got none')
    accuracy = np.array([s.accuracy for s in scores], np.float64)
    result = {'accuracy_mean': _mean(accuracy, skip_nan=False),
              'accuracy_std': _std(accuracy, skip_nan=False, matlab=matlab)}
    for name in METRICS:
        table = np.stack([getattr(s, name) for s in scores]).astype(np.float64)  # (videos, K)
        per_phase = _nanmean_rows(table, axis=0)
        skip_nan = not matlab or name in ('precision', 'f1')
        result[f'{name}_mean'] = _mean(per_phase, skip_nan)
        result[f'{name}_std'] = _std(per_phase, skip_nan, matlab)
        result[f'{name}_per_phase'] = [float(v) for v in per_phase]
        if not matlab:
            per_video = _nanmean_rows(table, axis=1)
            result[f'{name}_video_mean'] = _mean(per_video, skip_nan=True)
            result[f'{name}_video_std'] = _std(per_video, skip_nan=True, matlab=False)
    result['num_videos'] = len(scores)
    return result


def confusion_matrix(gt_list: Sequence[np.ndarray], pred_list: Sequence[np.ndarray],
                     num_phases: int = NUM_PHASES) -> np.ndarray:
    """(num_phases, num_phases) int64 frame counts over all videos; rows = truth, cols = pred."""
    if len(gt_list) != len(pred_list):
        raise ValueError(f'confusion_matrix: expected as many predictions as truths, got '
                         f'{len(pred_list)} and {len(gt_list)}')
    counts = np.zeros(num_phases * num_phases, np.int64)
    for gt, pred in zip(gt_list, pred_list):
        gt, pred = _check_pair(gt, pred, num_phases)
        counts += np.bincount(gt * num_phases + pred, minlength=num_phases * num_phases)
    return counts.reshape(num_phases, num_phases)


def check_videos(gt: Mapping[str, np.ndarray], pred: Mapping[str, np.ndarray]
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{video id: (gt, pred)} validated (same ids, lengths, labels 0..6), sorted by id."""
    if set(gt) != set(pred):
        raise ValueError(f'gt and pred must cover the same videos; only in gt: '
                         f'{sorted(set(gt) - set(pred))}, only in pred: '
                         f'{sorted(set(pred) - set(gt))}')
    if not gt:
        raise ValueError('evaluate_predictions: expected at least one video, got none')
    videos = {}
    for vid in sorted(gt):
        g = check_labels(gt[vid], f'gt[{vid!r}]')
        p = check_labels(pred[vid], f'pred[{vid!r}]')
        if len(g) != len(p):
            raise ValueError(f'video {vid!r}: gt has {len(g)} frames but pred has {len(p)}')
        videos[vid] = (g, p)
    return videos


def evaluate_predictions(gt: Mapping[str, np.ndarray], pred: Mapping[str, np.ndarray],
                         fps: float = 1) -> dict:
    """Strict and relaxed Cholec80 evaluation of per-video 1-fps label sequences, as plain data.

    Returns `{'strict': aggregate(matlab=False), 'relaxed': aggregate(matlab=True),
    'per_video': {vid: {...}}, 'confusion_matrix': [[...]], 'num_videos', 'num_frames'}`.
    """
    videos = check_videos(gt, pred)
    per_video, strict, relaxed = {}, [], []
    for vid, (g, p) in videos.items():
        strict.append(strict_video_scores(g, p))
        relaxed.append(relaxed_video_scores(g, p, fps=fps))
        per_video[vid] = {'strict_accuracy': strict[-1].accuracy,
                          'relaxed_accuracy': relaxed[-1].accuracy,
                          'strict_f1': _mean(strict[-1].f1, skip_nan=True),
                          'num_frames': len(g)}
    cm = confusion_matrix([g for g, _ in videos.values()], [p for _, p in videos.values()])
    return {'strict': aggregate(strict, matlab=False),
            'relaxed': aggregate(relaxed, matlab=True),
            'per_video': per_video,
            'confusion_matrix': cm.tolist(),
            'num_videos': len(videos),
            'num_frames': int(sum(len(g) for g, _ in videos.values()))}
