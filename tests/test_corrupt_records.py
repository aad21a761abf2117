"""Undecodable JPEG records in a split: the pre-training loader skips them (batches stay full),
counts and lists them in the workdir, and stops with an error naming them past the limit."""
import pathlib
import runpy

import numpy as np
import pytest

from gsvit_jax.data.corrupt import SKIPPED_FILE, CorruptRecordsError, skipped_records
from gsvit_jax.data.pairs import PairSource
from gsvit_jax.data.synthetic import synthetic_frame_records
from gsvit_jax.pretrain import _loader

CONFIG = pathlib.Path(__file__).parents[1] / 'experiments' / 'configs' / 'pretrain.py'
BROKEN = {3: b'not a jpeg at all', 10: None}  # frame -> bytes (None: the real JPEG cut in half)


def corrupt_source() -> PairSource:
    frames = synthetic_frame_records(1, 16, size=32)  # 16 frames, one per second
    for index, data in BROKEN.items():
        image = frames[index]['image']
        frames[index] = {**frames[index], 'image': data or image[:len(image) // 2]}
    pairs = np.array([[i, i + 1] for i in range(len(frames) - 1)])  # 15 pairs, 4 touch a break
    return PairSource(frames, pairs)


def config(**data):
    config = runpy.run_path(str(CONFIG))['get_config']('runlocal')
    config.batch_size = 4
    config.model.img_size = 32
    config.data.update(data)
    return config


def test_undecodable_pairs_are_skipped_counted_and_listed(tmp_path):
    batches = list(_loader(config(), corrupt_source(), tmp_path, train=False))  # one pass, in order
    assert [b['frame'].shape for b in batches] == [(4, 32, 32, 3)] * 2  # 11 good pairs: 2 full
    assert skipped_records(tmp_path / SKIPPED_FILE) == [
        'synthetic000@2.00s', 'synthetic000@3.00s', 'synthetic000@9.00s', 'synthetic000@10.00s']
    seen = np.concatenate([b['frame'] for b in batches])
    assert len({row.tobytes() for row in seen}) == 8  # 8 distinct good pairs, no blank stand-ins


def test_more_than_the_limit_stops_with_an_error_naming_them(tmp_path):
    with pytest.raises(CorruptRecordsError, match=r'3 frame pairs do not decode, more than '
                       r'data.max_corrupt_records=2: synthetic000@2.00s, synthetic000@3.00s, '
                       rf'synthetic000@9.00s \(all in {tmp_path}/{SKIPPED_FILE}\)'):
        list(_loader(config(max_corrupt_records=2), corrupt_source(), tmp_path, train=False))


def test_worker_processes_share_one_count_and_a_resumed_run_does_not_count_twice(tmp_path):
    for workers in (2, 0):  # a second run over the same records (as after a restart): still 4
        training = config(worker_count=workers, max_corrupt_records=4)
        loader = iter(_loader(training, corrupt_source(), tmp_path, train=True))
        for _ in range(6):  # 24 pairs: every record at least once, the broken ones too
            assert next(loader)['frame'].shape == (4, 32, 32, 3)
    assert len(skipped_records(tmp_path / SKIPPED_FILE)) == 4
