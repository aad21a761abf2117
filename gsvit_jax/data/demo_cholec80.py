"""A generated Cholec80-layout dataset built by the real `cholec80` builder (demos and tests).

Videos are 25-fps mp4s whose frames are tinted by their phase (plus per-pixel noise), with phase
and tool files in the release format, so phase recognition is learnable from single frames while
everything else (manual-dir layout, PyAV decoding, 1-fps sampling, JPEG, ArrayRecord) is real.
This is NOT Cholec80: numbers on it only show that the pipeline works.
"""
from __future__ import annotations

import logging
import pathlib
from typing import Sequence

log = logging.getLogger(__name__)


def build_demo_cholec80(root: str | pathlib.Path, *, train_videos: Sequence[int] = range(1, 7),
                        test_videos: Sequence[int] = range(41, 44), seconds: int = 40,
                        image_size: int = 64, noise: float = 12.0, misleading: float = 0.0,
                        seed: int = 0) -> pathlib.Path:
    """Write `root/manual` and build `root/tfds` once; returns the prepared dataset directory
    (splits `train` and `test`; open it with `gsvit_jax.data.frames.open_prepared`).
    `misleading`: fraction of seconds tinted as a wrong phase (see `fake_data.mislead`)."""
    import tensorflow_datasets as tfds

    from tfds_builders.cholec80 import fake_data
    from tfds_builders.cholec80.cholec80_dataset_builder import Builder, Cholec80Config

    root = pathlib.Path(root)
    config = Cholec80Config(
        name=f'demo_{len(train_videos)}_{len(test_videos)}_{seconds}s_{image_size}'
             f'_m{round(100 * misleading)}',
        description='Generated phase-tinted videos (not Cholec80).',
        splits={'train': list(train_videos), 'test': list(test_videos)},
        image_size=(image_size, image_size))
    builder = Builder(config=config, data_dir=str(root / 'tfds'), file_format='array_record')
    if not builder.is_prepared():
        numbers = [*train_videos, *test_videos]
        manual = fake_data.make_manual_dir(root / 'manual', numbers, seconds * 25,
                                           distinguishable=True, noise=noise,
                                           misleading=misleading, seed=seed)
        log.info('building a generated Cholec80-layout dataset from %d videos', len(numbers))
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    return pathlib.Path(builder.data_dir)
