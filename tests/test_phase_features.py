"""Feature cache: frames in time order per video, atomic per-video files, resume, stale caches."""
import json

import numpy as np
import pytest

from gsvit_jax.phase.features import build_feature_cache, load_features, read_manifest
from tfds_builders.video import encode_jpeg


def shuffled_source(seed=0):
    """Records of 3 videos (5, 3, 4 frames) in random order; frame k of video v is grey 10v+20k."""
    records = []
    for v, frames in enumerate((5, 3, 4)):
        for k in range(frames):
            image = np.full((16, 16, 3), 10 * v + 20 * k, np.uint8)
            records.append({'image': encode_jpeg(image, None),
                            'video_id': f'video{v + 1:02d}'.encode(),
                            'frame_index': 25 * k, 'phase': k % 7,
                            'tools': np.zeros(7, bool)})
    order = np.random.default_rng(seed).permutation(len(records))
    return [records[i] for i in order]


class CountingEncoder:
    """Stand-in encoder: latent = the mean BGR value, 2x (so D = 6); counts frames seen."""

    def __init__(self):
        self.frames = 0

    def __call__(self, images):
        self.frames += len(images)
        mean = images.reshape(len(images), -1, 3).mean(1)
        return np.concatenate([mean, 2 * mean], axis=1)


def test_cache_is_in_time_order_and_resumes(tmp_path):
    encoder = CountingEncoder()
    manifest = build_feature_cache(shuffled_source(), encoder, tmp_path, encoder_fingerprint='abc',
                                   image_size=16, batch_size=4, dtype='float32')
    assert manifest['complete'] and manifest['dim'] == 6 and encoder.frames == 12
    assert {v: e['frames'] for v, e in manifest['videos'].items()} == {
        'video01': 5, 'video02': 3, 'video03': 4}
    videos = load_features(tmp_path)
    np.testing.assert_array_equal(videos['video01'].frame_index, [0, 25, 50, 75, 100])
    np.testing.assert_array_equal(videos['video01'].phase, [0, 1, 2, 3, 4])
    # grey level 10v + 20k (JPEG may be off by one): the rows follow time, not record order
    np.testing.assert_allclose(videos['video03'].latent[:, 0], [20, 40, 60, 80], atol=1.5)
    np.testing.assert_allclose(videos['video02'].latent[:, 3], 2 * np.array([10, 30, 50]), atol=3)

    # an interrupted build: video02 not yet listed -> only its 3 frames are encoded again
    entry = manifest['videos'].pop('video02')
    manifest['complete'] = False
    (tmp_path / 'manifest.json').write_text(json.dumps(manifest))
    with pytest.raises(FileNotFoundError, match='no complete feature cache'):
        load_features(tmp_path)
    encoder.frames = 0
    build_feature_cache(shuffled_source(1), encoder, tmp_path, encoder_fingerprint='abc',
                        image_size=16, batch_size=4, dtype='float32')
    assert encoder.frames == 3
    assert read_manifest(tmp_path)['videos']['video02'] == entry
    again = load_features(tmp_path)
    np.testing.assert_array_equal(again['video02'].latent, videos['video02'].latent)


def test_cache_of_another_encoder_is_refused(tmp_path):
    build_feature_cache(shuffled_source(), CountingEncoder(), tmp_path, encoder_fingerprint='abc',
                        image_size=16, batch_size=8)
    with pytest.raises(ValueError, match='made by another encoder'):
        build_feature_cache(shuffled_source(), CountingEncoder(), tmp_path,
                            encoder_fingerprint='xyz', image_size=16)


def test_pooled_view_and_float16_storage(tmp_path):
    build_feature_cache(shuffled_source(), CountingEncoder(), tmp_path, encoder_fingerprint='abc',
                        image_size=16, batch_size=5)
    flat = load_features(tmp_path)
    assert flat['video01'].latent.dtype == np.float16
    pooled = load_features(tmp_path, pooled_channels=2)  # channel-major (2, 3) -> mean per channel
    expected = flat['video01'].latent.astype(np.float32).reshape(5, 2, 3).mean(-1)
    np.testing.assert_allclose(pooled['video01'].latent, expected, rtol=1e-3)
