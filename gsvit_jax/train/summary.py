"""The lines a pre-training run ends with: its final metrics, where its outputs are (checkpoints,
metrics.jsonl, prediction PNGs, TensorBoard logs) and the command to look at them."""
from __future__ import annotations

import importlib.util
import json
import pathlib
from typing import Any, Mapping

from gsvit_jax.data.corrupt import SKIPPED_FILE, skipped_records
from gsvit_jax.train.pictures import COLUMNS


def last_metrics(workdir: pathlib.Path) -> dict[str, dict[str, Any]]:
    """The newest row of each split in `metrics.jsonl` ({'train': {'step': ..., 'loss': ...}})."""
    path = workdir / 'metrics.jsonl'
    rows: dict[str, dict[str, Any]] = {}
    lines = path.read_text().splitlines() if path.is_file() else []
    for row in map(json.loads, filter(None, lines)):
        for key, value in row.items():
            split, _, name = key.partition('/')
            if name:
                rows.setdefault(split, {}).update(step=row['step'])
                rows[split][name] = value
    return rows


FIRST = ('loss', 'psnr')  # shown before the other metrics
MORE = 'raise --config.total_steps and rerun to train further'


def _metrics_line(split: str, row: Mapping[str, Any]) -> str:
    names = [n for n in FIRST if n in row] + [n for n in row if n not in FIRST and n != 'step']
    values = ', '.join(f'{name} {row[name]:.4g}{" dB" if name == "psnr" else ""}'
                       for name in names)
    return f'  {split} metrics (step {row["step"]}): {values}'


def run_summary(workdir: str | pathlib.Path, result: Mapping[str, Any]) -> str:
    """What `experiments/pretrain.py` prints at the end; `result` is `train_and_evaluate`'s."""
    workdir = pathlib.Path(workdir).absolute()
    step = result['step']
    if result.get('already_trained'):
        lines = [f'{workdir} is already trained to step {step} of {result["total_steps"]}; '
                 f'nothing to do ({MORE})']
    else:
        lines = [f'pre-training finished at step {step} in {workdir} ({MORE})']
    lines += [_metrics_line(split, row) for split, row in last_metrics(workdir).items()]
    checkpoints = sorted(int(p.name) for p in (workdir / 'checkpoints').glob('*')
                         if p.name.isdigit())
    if checkpoints:
        lines.append(f'  checkpoints: {workdir / "checkpoints"} (steps '
                     f'{", ".join(map(str, checkpoints))})')
    if (workdir / 'metrics.jsonl').is_file():
        lines.append(f'  metrics: {workdir / "metrics.jsonl"} (one JSON object per line)')
    pictures = sorted((workdir / 'images').glob('step_*.png'))
    if pictures:
        earlier = f' and {len(pictures) - 1} earlier' if len(pictures) > 1 else ''
        lines.append(f'  predictions: {pictures[-1]}{earlier} (columns: {" | ".join(COLUMNS)})')
    skipped = skipped_records(workdir / SKIPPED_FILE)
    if skipped:
        lines.append(f'  skipped: {len(skipped)} frame pairs that do not decode, listed in '
                     f'{workdir / SKIPPED_FILE}')
    logs = workdir / 'tensorboard'
    if logs.is_dir():
        view = f'tensorboard --logdir {logs}'
        if importlib.util.find_spec('tensorboard') is None:
            view = f'pip install "gsvit-jax[tensorboard]", then {view}'
        lines.append(f'  TensorBoard: {view}')
    return '\n'.join(lines)
