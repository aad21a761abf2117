"""Pre-training inputs: frame sources (TFDS `gensurgery` or in-memory synthetic) -> next-frame pairs."""
from __future__ import annotations

import logging
import pathlib
from typing import Any

import numpy as np

from ml_collections import ConfigDict

from gsvit_jax.data.demo_dataset import build_demo_dataset
from gsvit_jax.distributed import first_process_then_all
from gsvit_jax.data.frames import FrameTable, check_prepared, open_frames, open_prepared
from gsvit_jax.data.pairs import PairSource, next_frame_pairs
from gsvit_jax.data.synthetic import synthetic_frame_records
from gsvit_jax.errors import UserError

log = logging.getLogger(__name__)


def _frames(config: ConfigDict, split: str, workdir: pathlib.Path) -> Any:
    if config.name == 'synthetic':  # built-in, in memory: train and eval use different videos
        offset = 0 if split == config.train_split else 1000
        count = config.synthetic_videos if split == config.train_split else 2
        return synthetic_frame_records(count, config.synthetic_seconds, size=config.image_size,
                                       fps=config.synthetic_fps, seed=config.seed + offset)
    if config.get('demo_videos'):  # the built-in demo: generate videos, build with the real builder
        builder_dir = first_process_then_all('demo dataset', lambda: build_demo_dataset(
            workdir / 'demo_data', num_videos=config.demo_videos, seconds=config.demo_seconds,
            fps=config.demo_fps, image_size=config.image_size))
        return open_prepared(builder_dir, split)
    return open_frames(config.name, split, config.data_dir or None)


def check_data_config(config: ConfigDict) -> None:
    """Refuse a `data.name` that names no dataset, or one the chosen config would ignore, before
    any data is touched (TFDS's own error lists every dataset it knows, hundreds of lines)."""
    generated = ('the demo builds its own data' if config.get('demo_videos') else
                 'data.name=synthetic is generated in memory' if config.name == 'synthetic' else '')
    if generated and config.data_dir:
        raise UserError(f'data.data_dir={config.data_dir!r} is not read: {generated}; drop '
                        '--config.data.data_dir, or set data.name to a prepared dataset')
    if config.name == 'synthetic':
        return
    if config.get('demo_videos'):
        if config.name != 'gensurgery':
            raise UserError(f'data.name={config.name!r}: the demo config generates its own '
                            'GenSurgery-layout videos and reads no other dataset; drop '
                            '--config.data.name, or leave out :demo to train on a prepared one')
        return
    check_prepared(config.name, config.data_dir, 'data.name', 'gensurgery')


# The paper's procedure-specific models (GSViT-<Procedure>) -> GenSurgery list names.
PROCEDURES = {
    'appendectomy': ('appendectomy',), 'cholecystectomy': ('cholestectomy', 'robotic_chole'),
    'colectomy': ('colectomy', 'sigmoidectomy'), 'gastrectomy': ('gastrectomy',),
    'hernia_repair': ('hernia',), 'esophagectomy': ('esophagectomy',),
    'hemicolectomy': ('hemicolectomy',), 'hepatectomy': ('liver_resection',),
    'splenectomy': ('splenectomy',),
}


def procedure_categories(procedure: str) -> tuple[str, ...]:
    """A paper procedure name or any GenSurgery list name -> the list names it covers."""
    from tfds_builders.gensurgery.url_lists import CATEGORIES
    if procedure in PROCEDURES:
        return PROCEDURES[procedure]
    if procedure in CATEGORIES:
        return (procedure,)
    raise ValueError(f'unknown procedure {procedure!r}: use one of {sorted(PROCEDURES)} or a '
                     f'GenSurgery list name {list(CATEGORIES)}')


def _procedure_records(frames: Any, table: FrameTable, procedure: str) -> np.ndarray:
    """Record positions whose video is listed under `procedure`. `categories` is a per-video
    feature, so one record per video is read (not every frame)."""
    from tfds_builders.gensurgery.url_lists import CATEGORIES
    wanted = {CATEGORIES.index(c) for c in procedure_categories(procedure)}
    chosen = [positions for positions in table.videos().values()
              if wanted & {int(c) for c in frames[int(positions[0])]['categories']}]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def pair_source(config: ConfigDict, split: str, workdir: str | pathlib.Path) -> PairSource:
    """Pairs (frame t, frame t + gap_s) of `split`, indexed once from the frames' metadata;
    with `config.procedure`, only videos of that procedure (procedure fine-tuning)."""
    frames = _frames(config, split, pathlib.Path(workdir))
    table = FrameTable.cached(frames)
    pairs = next_frame_pairs(table, config.gap_s)
    if config.get('procedure'):
        keep = np.isin(pairs[:, 0], _procedure_records(frames, table, config.procedure))
        pairs = pairs[keep]
        if not len(pairs):
            raise ValueError(f'{config.name}/{split} has no video of procedure '
                             f'{config.procedure!r}')
    log.info('%s/%s: %d frames from %d videos -> %d pairs %.1f s apart', config.name, split,
             len(table), len(table.videos()), len(pairs), config.gap_s)
    return PairSource(frames, pairs)
