"""Grain pipelines: next-frame pairs, determinism, resume, sharding, augmentations.

Frames are generated with their index drawn in the pixels, so every check reads the truth back
from the decoded images rather than trusting metadata.
"""
import grain
import numpy as np
from PIL import Image
import pytest

from gsvit_jax.data.frames import FrameTable
from gsvit_jax.data.loader import GlobalBatchSampler, make_loader
from gsvit_jax.data.pairs import PairSource, next_frame_pairs
from gsvit_jax.data.sharding import data_mesh, shard_batch
from gsvit_jax.data.transforms import (DecodePair, FlipPair, PhaseEvalTransform, PhaseTrainAugment,
                                       SelectFields, decode_jpeg)
from tfds_builders.testing import index_frame, read_index
from tfds_builders.video import encode_jpeg

FPS = 25  # source video rate; frames are sampled at 1 fps like the builders do


def frame_records(videos: dict[str, int], seed: int = 0) -> list[dict]:
    """In-memory stand-in for a TFDS frame source: 1-fps samples of each video, shuffled.
    Video v's frame at time t shows the number 1000 * v_number + source frame index."""
    records = []
    for number, (video_id, seconds) in enumerate(sorted(videos.items())):
        for t in range(seconds):
            image = index_frame(1000 * number + t * FPS, 64, 64)
            records.append({'image': encode_jpeg(image, 64), 'video_id': video_id.encode(),
                            'frame_index': t * FPS, 'timestamp_s': np.float32(t)})
    order = np.random.default_rng(seed).permutation(len(records))
    return [records[i] for i in order]


@pytest.fixture(scope='module')
def frames():
    return frame_records({'a': 6, 'b': 3, 'c': 1, 'd': 5})


@pytest.mark.parametrize('gap_s', [1.0, 2.0])
def test_pairs_are_exactly_gap_apart_and_never_cross_videos(frames, gap_s):
    table = FrameTable.from_source(frames)
    pairs = next_frame_pairs(table, gap_s)
    per_video = {'a': 6, 'b': 3, 'c': 1, 'd': 5}
    assert len(pairs) == sum(max(n - int(gap_s), 0) for n in per_video.values())
    source = PairSource(frames, pairs)
    decode = DecodePair(size=64)
    seen = set()
    for i in range(len(source)):
        element = decode.map(source[i])
        first, second = read_index(element['frame']), read_index(element['next_frame'])
        assert first // 1000 == second // 1000  # same video
        assert second - first == gap_s * FPS  # exactly gap seconds later in the source video
        assert element['next_timestamp_s'] - element['timestamp_s'] == gap_s
        seen.add(first)
    assert len(seen) == len(pairs)


def test_gap_longer_than_every_video_is_a_clear_error(frames):
    with pytest.raises(ValueError, match='no frame pairs 60.0 s apart'):
        next_frame_pairs(FrameTable.from_source(frames), 60.0)


def pair_loader(frames, seed, workers=0, shard=None, augment=False):
    source = PairSource(frames, next_frame_pairs(FrameTable.from_source(frames), 1.0))
    ops = [DecodePair(size=32), *( [FlipPair()] if augment else []),
           SelectFields(('frame', 'next_frame', 'timestamp_s'))]
    return make_loader(source, ops, global_batch_size=4, seed=seed, worker_count=workers,
                       shard=shard)


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_shuffling_is_seeded(frames):
    a = take(iter(pair_loader(frames, seed=1)), 3)
    b = take(iter(pair_loader(frames, seed=1)), 3)
    c = take(iter(pair_loader(frames, seed=2)), 3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x['frame'], y['frame'])
    assert any(not np.array_equal(x['frame'], z['frame']) for x, z in zip(a, c))
    assert a[0]['frame'].shape == (4, 32, 32, 3) and a[0]['frame'].dtype == np.uint8


@pytest.mark.parametrize('workers', [0, 2])
def test_restored_iterator_state_reproduces_the_next_batches(frames, workers):
    iterator = iter(pair_loader(frames, seed=3, workers=workers, augment=True))
    take(iterator, 3)
    state = iterator.get_state()
    expected = take(iterator, 4)  # crosses an epoch boundary (11 pairs, batches of 4)
    resumed = iter(pair_loader(frames, seed=3, workers=workers, augment=True))
    resumed.set_state(state)
    for x, y in zip(expected, take(resumed, 4)):
        np.testing.assert_array_equal(x['frame'], y['frame'])
        np.testing.assert_array_equal(x['next_frame'], y['next_frame'])


@pytest.mark.parametrize('workers', [0, 2])
def test_process_blocks_are_disjoint_and_make_up_the_global_batch(frames, workers):
    """Each of 2 processes gets its half of every global batch of the one-process stream (also
    across an epoch boundary: 11 pairs, batches of 4), augmentation included."""
    whole = take(iter(pair_loader(frames, seed=4, augment=True)), 5)
    halves = [take(iter(pair_loader(frames, seed=4, workers=workers, shard=(index, 2),
                                    augment=True)), 5) for index in range(2)]
    for step, batch in enumerate(whole):
        first, second = halves[0][step], halves[1][step]
        assert first['frame'].shape[0] == second['frame'].shape[0] == 2
        ids = [{read_index(im) for im in half['frame']} for half in (first, second)]
        assert not ids[0] & ids[1]
        for key in ('frame', 'next_frame', 'timestamp_s'):
            np.testing.assert_array_equal(np.concatenate([first[key], second[key]]), batch[key])


def test_global_batch_sampler_positions():
    stream = grain.samplers.IndexSampler(num_records=10, shuffle=False, num_epochs=1)
    sampler = GlobalBatchSampler(stream, per_process=2, count=3)  # global batches of 6
    assert len(sampler) == 6  # one whole global batch of the 10 records
    # process p's j-th record is Grain's index j * 3 + p
    assert [sampler.position(j * 3 + 1) for j in range(4)] == [2, 3, 8, 9]
    assert [sampler[j * 3 + 2].record_key for j in range(2)] == [4, 5]
    with pytest.raises(IndexError):
        sampler[6]


def test_batches_land_sharded_over_the_data_axis():
    mesh = data_mesh()
    assert mesh.devices.size == 8
    batch = {'image': np.arange(16 * 3, dtype=np.uint8).reshape(16, 3),
             'video_id': np.array(['v'] * 16)}
    sharded = shard_batch(batch, mesh)
    image = sharded['image']
    assert image.shape == (16, 3)
    assert len(image.addressable_shards) == 8
    assert {s.data.shape for s in image.addressable_shards} == {(2, 3)}
    np.testing.assert_array_equal(np.asarray(image), batch['image'])
    assert isinstance(sharded['video_id'], np.ndarray)


def test_phase_augmentations_are_seeded_and_eval_is_exact():
    image = index_frame(777, 128, 128)
    element = {'image': encode_jpeg(image, 128), 'phase': 3}
    augment = PhaseTrainAugment(size=64)
    a = augment.random_map(element, np.random.default_rng(0))['image']
    b = augment.random_map(element, np.random.default_rng(0))['image']
    c = augment.random_map(element, np.random.default_rng(1))['image']
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    evaluated = PhaseEvalTransform(size=64).map(element)
    assert evaluated['phase'] == 3 and read_index(evaluated['image']) == 777
    rgb = np.asarray(decode_jpeg(element['image']).resize((64, 64), Image.BILINEAR))
    np.testing.assert_array_equal(evaluated['image'], rgb[..., ::-1])  # BGR


def test_procedure_filter_keeps_only_that_procedures_videos(monkeypatch):
    from ml_collections import ConfigDict

    from gsvit_jax.data import pretrain_data
    from tfds_builders.gensurgery.url_lists import CATEGORIES
    records = frame_records({'a': 4, 'b': 3, 'c': 5})
    tags = {b'a': ['hernia'], b'b': ['robotic_chole', 'unsorted'], b'c': ['colectomy']}
    for record in records:
        record['categories'] = [CATEGORIES.index(c) for c in tags[record['video_id']]]
    config = ConfigDict(dict(name='memory', gap_s=1.0, procedure='cholecystectomy'))
    monkeypatch.setattr(pretrain_data, '_frames', lambda *args: records)
    source = pretrain_data.pair_source(config, 'train', '/unused')
    assert len(source) == 2  # video b: 3 frames at 1 fps -> 2 pairs 1 s apart
    assert {source[i]['video_id'] for i in range(len(source))} == {'b'}
    with pytest.raises(ValueError, match="unknown procedure 'knee'"):
        pretrain_data.procedure_categories('knee')
