"""Metrics to a `metrics.jsonl` (one JSON object per line) and TensorBoard event files."""
from __future__ import annotations

import json
import pathlib
from typing import Any, Mapping

import numpy as np

from gsvit_jax.train.event_file import EventFileWriter


class MetricWriter:
    """Writes scalars (and images) for one run; `split` prefixes keys like `train/loss`."""

    def __init__(self, workdir: str | pathlib.Path, *, enabled: bool = True):
        self.workdir = pathlib.Path(workdir)
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        if enabled:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self.workdir / 'metrics.jsonl', 'a', buffering=1)
            self._tb = EventFileWriter(self.workdir / 'tensorboard')

    def scalars(self, step: int, metrics: Mapping[str, Any], split: str = 'train') -> None:
        if not self.enabled:
            return
        values = {f'{split}/{k}': float(np.asarray(v)) for k, v in metrics.items()}
        self._jsonl.write(json.dumps({'step': int(step), **values}) + '\n')
        for key, value in values.items():
            self._tb.scalar(key, value, int(step))
        self._tb.flush()  # TensorBoard shows it now, and a killed run loses nothing

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        """HWC uint8 RGB image to TensorBoard."""
        if self.enabled:
            self._tb.image(name, image, int(step))
            self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()

