"""Phase prediction for any video file: decode at 1 fps (PyAV, streamed), encode, classify.

Writes `<stem>.phases.csv` (one row per second: time, phase, confidence, the 7 probabilities)
and `<stem>.timeline.png`. Frames are processed in small batches as they are decoded, so a long
video is never held in memory; the causal temporal model is run online, second by second.
"""
from __future__ import annotations

import csv
import os
import pathlib
from typing import Iterator

import numpy as np
from PIL import Image
from tqdm import tqdm

from gsvit_jax.data.transforms import to_bgr_array
from gsvit_jax.phase.pictures import prediction_timeline, save_png
from gsvit_jax.phase.predictor import PhaseModel, PhaseWeights
from tfds_builders.cholec80.annotations import PHASES
from tfds_builders.video import sample_at_fps

CSV_HEADER = ('second', 'timestamp_s', 'frame_index', 'phase_id', 'phase', 'confidence',
              *(f'p_{name}' for name in PHASES))


def _batches(video: pathlib.Path, size: int, batch_size: int
             ) -> Iterator[tuple[list[int], list[float], np.ndarray]]:
    """(frame indices, times, uint8 BGR (B, size, size, 3)) of the 1-fps frames, batch by batch."""
    indices, times, images = [], [], []
    for index, time, rgb in sample_at_fps(video, 1.0):
        indices.append(index)
        times.append(time)
        images.append(to_bgr_array(Image.fromarray(rgb), size))
        if len(images) == batch_size:
            yield indices, times, np.stack(images)
            indices, times, images = [], [], []
    if images:
        yield indices, times, np.stack(images)


def predict_video(video: str | os.PathLike, checkpoint: str | os.PathLike,
                  out_dir: str | os.PathLike | None = None, *, batch_size: int = 32,
                  model: tuple[PhaseModel, PhaseWeights] | None = None) -> dict[str, object]:
    """Predict every second of `video` with the run in `checkpoint` (a train_phase workdir);
    returns the output paths and the per-second phase ids."""
    video = pathlib.Path(video)
    if not video.is_file():
        raise FileNotFoundError(f'{video}: no such video file')
    phase_model, weights = model or PhaseModel.from_workdir(checkpoint)
    out_dir = pathlib.Path(out_dir) if out_dir else video.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f'{video.stem}.phases.csv'
    partial = csv_path.with_name(csv_path.name + '.partial')
    online = phase_model.online(weights)
    phases: list[int] = []
    with open(partial, 'w', newline='') as f, tqdm(desc=video.name, unit='s') as bar:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADER)
        for indices, times, images in _batches(video, phase_model.image_size, batch_size):
            latents = np.asarray(phase_model.encode_images(weights.encoder, images))
            if phase_model.kind == 'temporal':  # causal: one second at a time
                probs = np.concatenate([online.update(latents[i:i + 1])
                                        for i in range(len(latents))])
            else:
                probs = online.update(latents)
            for index, time, p in zip(indices, times, probs):
                phase = int(p.argmax())
                writer.writerow([len(phases), f'{time:.3f}', index, phase, PHASES[phase],
                                 f'{p[phase]:.4f}', *(f'{q:.4f}' for q in p)])
                phases.append(phase)
            bar.update(len(images))
    os.replace(partial, csv_path)
    png = save_png(prediction_timeline(np.array(phases), video.name),
                   out_dir / f'{video.stem}.timeline.png')
    return {'csv': csv_path, 'timeline': png, 'phases': np.array(phases, np.int64)}
