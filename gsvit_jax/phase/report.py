"""Cholec80 phase-recognition report: Table-1-style Markdown (strict and relaxed) and JSON.

Input is `{model name: gsvit_jax.phase.metrics.evaluate_predictions(...) result}`. Both
protocols are shown, each saying how its numbers were taken, since published Cholec80 numbers
mix them (datasets spec §1.6); the data label keeps generated data from passing for Cholec80.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any, Mapping

import numpy as np

from gsvit_jax.atomic import write_text_atomic
from tfds_builders.cholec80.annotations import PHASES

MISSING = '–'
STRICT_HEADING = 'Strict (frame-exact) metrics — recommended'
RELAXED_HEADING = 'Relaxed 10-s boundary, M2CAI/Cholec80 Matlab-script semantics'
PAPER_REFERENCE = ('For reference, the GSViT paper (Table 1, real Cholec80, single frame, '
                   'protocol not stated): accuracy 86.3 ± 5.9, precision 82.5 ± 7.1, '
                   'recall 84.7 ± 5.3, 13.7M tunable params.')
_SUMMARY_COLUMNS = (('Accuracy', 'accuracy'), ('Precision', 'precision'), ('Recall', 'recall'),
                    ('Jaccard', 'jaccard'), ('F1', 'f1'))
_STD_NOTE = ('Accuracy: mean ± std across videos. Precision, recall, Jaccard, F1: per phase the '
             'mean over videos, then mean ± std across phases. std with ddof=1.')


def _missing(value: Any) -> bool:
    return value is None or math.isnan(value)


def _number(value: Any) -> str:
    return MISSING if _missing(value) else f'{value:.1f}'


def _mean_std(summary: Mapping[str, Any], key: str) -> str:
    mean, std = summary[f'{key}_mean'], summary[f'{key}_std']
    return MISSING if _missing(mean) else f'{mean:.1f} ± {_number(std)}'


def _params(count: int | None) -> str:
    if count is None:
        return MISSING
    return f'{count / 1e6:.1f}M' if count >= 100_000 else f'{count / 1e3:.1f}K'


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    return lines + ['| ' + ' | '.join(row) + ' |' for row in rows]


def _check_same_videos(results: Mapping[str, dict]) -> tuple[int, int]:
    """(videos, frames) shared by every model; ValueError if the models saw different videos."""
    if not results:
        raise ValueError('table1_markdown: expected results of at least one model, got none')
    videos = {name: sorted(r['per_video']) for name, r in results.items()}
    first = next(iter(videos.values()))
    if any(v != first for v in videos.values()):
        raise ValueError(f'models were evaluated on different videos: {videos}')
    result = next(iter(results.values()))
    return result['num_videos'], result['num_frames']


def _summary_table(results: Mapping[str, dict], protocol: str,
                   params: Mapping[str, int] | None) -> list[str]:
    header = ['Model'] + [title for title, _ in _SUMMARY_COLUMNS]
    columns = [key for _, key in _SUMMARY_COLUMNS]
    if protocol == 'strict':
        header.append('F1 (video-level)')
    if params is not None:
        header.append('Params')
    rows = []
    for name, result in results.items():
        summary = result[protocol]
        row = [name] + [_mean_std(summary, key) for key in columns]
        if protocol == 'strict':
            row.append(_mean_std(summary, 'f1_video'))
        if params is not None:
            row.append(_params(params.get(name)))
        rows.append(row)
    return _table(header, rows)


def _per_phase_table(results: Mapping[str, dict]) -> list[str]:
    metrics = _SUMMARY_COLUMNS[1:]
    header = ['Phase'] + [f'{name}: {title}' for name in results for title, _ in metrics]
    rows = [[phase] + [_number(result['strict'][f'{key}_per_phase'][index])
                       for result in results.values() for _, key in metrics]
            for index, phase in enumerate(PHASES)]
    return _table(header, rows)


def _per_video_table(results: Mapping[str, dict]) -> list[str]:
    header = ['Video', 'Seconds'] + [f'{name}: {title}' for name in results for title in
                                     ('strict acc.', 'relaxed acc.', 'strict F1')]
    first = next(iter(results.values()))['per_video']
    rows = [[video, str(first[video]['num_frames'])]
            + [_number(r['per_video'][video][key]) for r in results.values()
               for key in ('strict_accuracy', 'relaxed_accuracy', 'strict_f1')]
            for video in sorted(first)]
    return _table(header, rows)


def table1_markdown(results: Mapping[str, dict], *, split: str, data_label: str,
                    params: Mapping[str, int] | None = None) -> str:
    """Markdown in the shape of the paper's Table 1: strict table, relaxed table, per-phase."""
    num_videos, num_frames = _check_same_videos(results)
    scope = (f'Split `{split}`; data: {data_label}; {num_videos} videos, '
             f'{num_frames} frames at 1 fps.')
    lines = [f'## Cholec80 phase recognition — split `{split}`', '',
             f'### {STRICT_HEADING}', '', scope, _STD_NOTE,
             'F1 (video-level): per video the mean F1 over its phases, then mean ± std across '
             'videos (the CAMMA-recommended "F1 averaged over videos").', '',
             *_summary_table(results, 'strict', params), '',
             f'### {RELAXED_HEADING}', '', scope, _STD_NOTE,
             'A prediction one phase late (early) within 10 s of the start (end) of a true '
             'phase segment counts as correct (two phases for the last phases); relaxed '
             'precision/recall above 100 are clipped to 100. Script quirks kept: recall and '
             'Jaccard are averaged over phases with `mean` (a phase absent from every video '
             'gives NaN, shown as –), precision and F1 with `nanmean`; the end-of-segment rule '
             "forgives frames at the segment's start (Matlab logical indexing), not the early "
             'frames at its end.',
             '', *_summary_table(results, 'relaxed', params), '', PAPER_REFERENCE, '',
             '### Per-phase strict metrics (mean over videos)', '', scope, '',
             *_per_phase_table(results), '',
             '### Per-video accuracy', '', scope, '', *_per_video_table(results), '']
    return '\n'.join(lines)


def _jsonable(value: Any) -> Any:
    """Plain JSON data with NaN and infinities as None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_report(results: Mapping[str, dict], out_dir: str | os.PathLike, *, split: str,
                 data_label: str, params: Mapping[str, int] | None = None
                 ) -> dict[str, pathlib.Path]:
    """Write `report.md` and strict-JSON `report.json` (NaN -> null) atomically into `out_dir`."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = table1_markdown(results, split=split, data_label=data_label, params=params)
    payload = _jsonable({'split': split, 'data_label': data_label, 'params': params,
                         'results': results})
    return {'markdown': write_text_atomic(out_dir / 'report.md', markdown),
            'json': write_text_atomic(out_dir / 'report.json',
                                  json.dumps(payload, indent=2, allow_nan=False) + '\n')}
