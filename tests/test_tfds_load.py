"""`tfds.load` of both builders after `import tfds_builders` (needs TensorFlow: the `tf` extra),
the default data path (data_source + Grain) works without importing TensorFlow, and
`python -m tfds_builders.build --file_format=both` serves all of these readers from one build."""
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tfds_builders  # noqa: F401  (registers gensurgery and cholec80)
from tfds_builders import testing
from tfds_builders.cholec80 import fake_data as cholec80_fake
from tfds_builders.gensurgery import fake_data as gensurgery_fake

tf = pytest.importorskip('tensorflow', reason='tfds.load needs TensorFlow (pip install ".[tf]")')
import tensorflow_datasets as tfds  # noqa: E402


def test_tfds_load_gensurgery(tmp_path):
    videos = [gensurgery_fake.FakeVideo('loadVideo01', ('hernia',), seconds=3.0),
              gensurgery_fake.FakeVideo('loadVideo02', ('colectomy', 'unsorted'), seconds=2.0)]
    manual = gensurgery_fake.write_manual_dir(tmp_path / 'manual', videos)
    ds = tfds.load('gensurgery', split='train+validation', data_dir=str(tmp_path / 'data'),
                   download_and_prepare_kwargs={'download_config': tfds.download.DownloadConfig(
                       manual_dir=str(manual))})
    examples = list(tfds.as_numpy(ds))
    assert len(examples) == 3 + 2  # 1 fps from 3 s and 2 s videos
    for example in examples:
        assert example['image'].shape == (224, 224, 3)
        assert testing.read_index(example['image']) == example['frame_index']
        assert example['frame_index'] % 25 == 0


def test_tfds_load_cholec80(tmp_path):
    manual = cholec80_fake.make_manual_dir(tmp_path / 'manual', [1, 41], 60)
    ds = tfds.load('cholec80', split='test', data_dir=str(tmp_path / 'data'),
                   download_and_prepare_kwargs={'download_config': tfds.download.DownloadConfig(
                       manual_dir=str(manual))})
    examples = sorted(tfds.as_numpy(ds), key=lambda e: e['frame_index'])
    assert [e['frame_index'] for e in examples] == [0, 25, 50]
    assert all(e['video_id'] == b'video41' for e in examples)
    assert [testing.read_index(e['image']) for e in examples] == [0, 25, 50]
    assert examples[0]['tools'].shape == (7,) and 0 <= examples[0]['phase'] < 7


def test_default_data_path_never_imports_tensorflow(tmp_path):
    """Build with array_record, index (kept on disk), read through data_source and a Grain loader:
    TF never imported."""
    script = textwrap.dedent(f'''
        import sys
        import tensorflow_datasets as tfds
        from gsvit_jax.data.frames import FrameTable, open_prepared
        from gsvit_jax.data.loader import make_loader
        from gsvit_jax.data.pairs import PairSource, next_frame_pairs
        from gsvit_jax.data.transforms import DecodePair, SelectFields
        from tfds_builders.gensurgery import fake_data
        from tfds_builders.gensurgery.gensurgery_dataset_builder import Builder, BuilderConfig
        manual = fake_data.write_manual_dir({str(tmp_path / 'm')!r},
                                            [fake_data.FakeVideo('noTfVideo01', ('hernia',), 4.0)])
        builder = Builder(config=BuilderConfig(name='notf', fps=1.0, image_size=32,
                                               validation_percent=0),
                          data_dir={str(tmp_path / 'd')!r}, file_format='array_record')
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
        frames = open_prepared(builder.data_dir, 'train')
        source = PairSource(frames, next_frame_pairs(FrameTable.cached(frames), 1.0))
        batch = next(iter(make_loader(source, [DecodePair(32), SelectFields(('frame',))],
                                      global_batch_size=3, seed=0)))
        assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'
        print('OK', batch['frame'].shape)
    ''')
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'OK (3, 32, 32, 3)' in result.stdout


def build_command(tmp_path, *options) -> subprocess.CompletedProcess:
    manual = cholec80_fake.make_manual_dir(tmp_path / 'manual', [2, 45], 30)
    result = subprocess.run([sys.executable, '-m', 'tfds_builders.build', 'cholec80',
                             f'--manual_dir={manual}', f'--data_dir={tmp_path / "data"}',
                             '--workers=1', *options], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_build_command_prepares_array_record(tmp_path):
    result = build_command(tmp_path)
    assert 'prepared cholec80/40_40/1.0.0' in result.stdout
    assert 'train 2 examples, test 2 examples' in result.stdout
    source = tfds.data_source('cholec80', split='test', data_dir=str(tmp_path / 'data'))
    assert len(source) == 2 and np.asarray(source[0]['image']).shape == (256, 256, 3)
    # tfds.load cannot read ArrayRecord: the error names the builds it can read
    with pytest.raises(NotImplementedError, match=r'ArrayRecord files only.*--file_format=both'):
        tfds.load('cholec80', split='test', data_dir=str(tmp_path / 'data'))
    # no log line names TFDS's temporary folder, which is gone now (its progress bars still do)
    assert not re.search(r'(INFO|WARNING|ERROR) [\w.]+: [^\n\r]*incomplete\.', result.stderr)


def test_one_build_serves_tfds_load_data_source_and_grain(tmp_path):
    result = build_command(tmp_path, '--file_format=both')
    assert '(both): train 2 examples, test 2 examples' in result.stdout
    from gsvit_jax.data.frames import open_prepared
    for split in ('train', 'test'):
        jpeg = {'image': tfds.decode.SkipDecoding()}  # the stored bytes, not a decoder's pixels
        loaded = [(int(e['frame_index']), e['video_id'], e['image'])
                  for e in tfds.as_numpy(tfds.load('cholec80', split=split, decoders=jpeg,
                                                   data_dir=str(tmp_path / 'data')))]
        source = tfds.data_source('cholec80', split=split, data_dir=str(tmp_path / 'data'),
                                  decoders=jpeg)
        assert loaded == [(int(e['frame_index']), e['video_id'], e['image'])
                          for e in (source[i] for i in range(len(source)))]
        builder_dir = tmp_path / 'data' / 'cholec80' / '40_40' / '1.0.0'
        assert len(open_prepared(builder_dir, split)) == len(loaded) == 2
