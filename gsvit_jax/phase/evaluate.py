"""Evaluate a trained phase model on cached latents: report (Markdown + JSON), timelines,
confusion matrix and per-video predictions, under one output folder."""
from __future__ import annotations

import logging
import pathlib
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from gsvit_jax.convert.checkpoints import count_parameters
from gsvit_jax.atomic import write_atomic
from gsvit_jax.phase.features import VideoFeatures
from gsvit_jax.phase.metrics import evaluate_predictions
from gsvit_jax.phase.pictures import confusion_matrix_image, phase_timelines, save_png
from gsvit_jax.phase.predictor import PhaseModel
from gsvit_jax.phase.report import write_report

log = logging.getLogger(__name__)


def predictions(model: PhaseModel, weights: Any, videos: Mapping[str, VideoFeatures]
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(ground truth, predicted phase) per video, 1 fps."""
    probs = model.predict_videos(weights, videos)
    return ({v: videos[v].phase for v in videos}, {v: probs[v].argmax(-1) for v in videos})


def write_evaluation(model: PhaseModel, weights: Any, videos: Mapping[str, VideoFeatures],
                     out_dir: str | pathlib.Path, *, split: str, data_label: str,
                     name: str | None = None) -> dict[str, float]:
    """Evaluate `weights` (head + normaliser) on `videos`; write report.md/json, timelines.png,
    confusion_matrix.png and predictions.npz to `out_dir`; return headline numbers."""
    out_dir = pathlib.Path(out_dir)
    gt, pred = predictions(model, weights, videos)
    results = evaluate_predictions(gt, pred)
    name = name or ('GSViT + causal TCN (online)' if model.kind == 'temporal'
                    else 'GSViT single-frame MLP head')
    write_report({name: results}, out_dir, split=split, data_label=data_label,
                 params={name: count_parameters({'params': weights.params})})
    save_png(phase_timelines(gt, pred), out_dir / 'timelines.png')
    save_png(confusion_matrix_image(np.asarray(results['confusion_matrix'])),
             out_dir / 'confusion_matrix.png')
    write_atomic(out_dir / 'predictions.npz', lambda f: np.savez(
        f, **{f'gt/{v}': gt[v] for v in gt}, **{f'pred/{v}': pred[v] for v in pred}))
    strict, relaxed = results['strict'], results['relaxed']
    summary = {'accuracy': strict['accuracy_mean'], 'f1': strict['f1_mean'],
               'relaxed_accuracy': relaxed['accuracy_mean']}
    log.info('%s on %s: strict accuracy %.2f%%, F1 %.2f; relaxed accuracy %.2f%% (%s)', name,
             split, summary['accuracy'], summary['f1'], summary['relaxed_accuracy'], out_dir)
    return summary


def _run_name(model: PhaseModel, workdir: pathlib.Path) -> str:
    kind = 'causal TCN (online)' if model.kind == 'temporal' else 'single-frame MLP head'
    return f'GSViT + {kind} [{workdir.name}]'


def evaluate_runs(workdirs: Sequence[str | pathlib.Path], out_dir: str | pathlib.Path, *,
                  split: str | None = None) -> dict[str, dict[str, Any]]:
    """Evaluate trained runs (train_phase workdirs) on the same split and write one report with
    a row per run (Table-1 shape), per-run timelines and confusion matrices; returns results."""
    from gsvit_jax.data.sharding import data_mesh
    from gsvit_jax.phase.data import cached_split
    from gsvit_jax.phase.encoder import fingerprint, make_encode_fn
    from gsvit_jax.phase.train import load_run_config

    out_dir = pathlib.Path(out_dir)
    results, params, labels = {}, {}, set()
    for i, workdir in enumerate(map(pathlib.Path, workdirs)):
        config = load_run_config(workdir)
        model, weights = PhaseModel.from_workdir(workdir)
        split = split or config.data.eval_split
        encoder_fp = fingerprint(weights.encoder, variant=config.encoder.variant,
                                 image_size=config.data.image_size)
        encode_fn = make_encode_fn(model.encoder, weights.encoder, data_mesh(jax.local_devices()))
        videos = cached_split(config, workdir, split, encode_fn, encoder_fp,
                              model.pooled_channels)
        gt, pred = predictions(model, weights, videos)
        name = _run_name(model, workdir)
        results[name] = evaluate_predictions(gt, pred)
        params[name] = count_parameters({'params': weights.params})
        labels.add(config.data.label)
        save_png(phase_timelines(gt, pred), out_dir / f'timelines_{i}_{workdir.name}.png')
        save_png(confusion_matrix_image(np.asarray(results[name]['confusion_matrix'])),
                 out_dir / f'confusion_matrix_{i}_{workdir.name}.png')
    write_report(results, out_dir, split=split, data_label=' / '.join(sorted(labels)),
                 params=params)
    return results
