"""The built-in demo dataset: generated surgery-like videos -> GenSurgery layout -> real TFDS build.

Everything the full pipeline does happens for real (manual-dir layout, URL lists, PyAV decoding,
1/fps sampling, JPEG, ArrayRecord); only the videos are procedural (`synthetic.surgical_video`).
"""
from __future__ import annotations

import logging
import pathlib

log = logging.getLogger(__name__)
DEMO_CATEGORIES = ('cholestectomy', 'colectomy', 'hernia', 'appendectomy', 'robotic_chole')


def build_demo_dataset(root: str | pathlib.Path, *, num_videos: int = 10, seconds: float = 30.0,
                       fps: float = 2.0, image_size: int = 64,
                       validation_percent: float = 20.0) -> pathlib.Path:
    """Write `root/manual` and build `root/tfds` once; returns the prepared dataset directory."""
    import tensorflow_datasets as tfds

    from gsvit_jax.data.synthetic import surgical_video
    from tfds_builders.gensurgery import fake_data
    from tfds_builders.gensurgery.gensurgery_dataset_builder import Builder, BuilderConfig

    root = pathlib.Path(root)
    config = BuilderConfig(name=f'demo_{fps:g}fps_{image_size}', fps=fps, image_size=image_size,
                           validation_percent=validation_percent,
                           description='Built-in demo: procedural surgery-like videos.')
    builder = Builder(config=config, data_dir=str(root / 'tfds'), file_format='array_record')
    if not builder.is_prepared():
        videos = [fake_data.FakeVideo(f'demoVid{i:04d}',  # 11 characters, like a YouTube ID
                                      (DEMO_CATEGORIES[i % len(DEMO_CATEGORIES)],), seconds=seconds)
                  for i in range(num_videos)]
        manual = fake_data.write_manual_dir(root / 'manual', videos, frames=surgical_video,
                                            height=144, width=256)
        log.info('building the demo GenSurgery dataset from %d generated videos', num_videos)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    return pathlib.Path(builder.data_dir)
