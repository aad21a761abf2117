"""Cholec80 TFDS builder: annotation parsing, generated data, 1-fps frames and labels, splits,
skipped videos, malformed annotations, length mismatches, and the committed dummy data."""
import json
import logging
import pickle
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfds_builders import generation, testing
from tfds_builders.cholec80 import annotations, fake_data
from tfds_builders.cholec80 import cholec80_dataset_builder as c80
from tfds_builders.video import VideoReadError, iter_frames

PHASE_ROWS = 'Frame\tPhase\n0\tPreparation\n1\tPreparation\n2\tCalotTriangleDissection\n'
TOOL_HEADER = 'Frame\tGrasper\tBipolar\tHook\tScissors\tClipper\tIrrigator\tSpecimenBag'
TOOL_ROWS = f'{TOOL_HEADER}\n0\t1\t0\t0\t0\t0\t0\t0\n25\t1\t0\t1\t0\t0\t0\t1\n'


def build(manual_dir, data_dir, config, num_workers=1):
    """Prepare `config` (a name or a Cholec80Config) from `manual_dir` as array_record."""
    builder = c80.Builder(config=config, data_dir=str(data_dir), file_format='array_record')
    builder.num_workers = num_workers
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


def examples(builder, split):
    source = builder.as_data_source(split)
    return [source[i] for i in range(len(source))]


# ----------------------------------------------------------------------------------------------
# Annotation parsing
# ----------------------------------------------------------------------------------------------
def test_parse_phases_tolerates_crlf_and_trailing_blank_line():
    expected = [0, 0, 1]
    assert annotations.parse_phases(PHASE_ROWS).tolist() == expected
    assert annotations.parse_phases(PHASE_ROWS.replace('\n', '\r\n') + '\r\n').tolist() == expected


def test_parse_tools_rows_every_25_frames():
    tools = annotations.parse_tools(TOOL_ROWS.replace('\n', '\r\n') + '\n')
    assert tools.frames.tolist() == [0, 25]
    assert tools.present.dtype == np.bool_
    assert tools.present.astype(int).tolist() == [[1, 0, 0, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0, 1]]


def test_format_then_parse_round_trips():
    phases = ['Preparation', 'GallbladderRetraction', 'ClippingCutting']
    assert annotations.parse_phases(annotations.format_phases(phases)).tolist() == [0, 6, 2]
    flags = np.eye(7, dtype=bool)
    assert (annotations.parse_tools(annotations.format_tools(flags)).present == flags).all()


MALFORMED = [  # (parser, text, line number, offending text, fragment of what was expected)
    ('phase', 'Frame\tPhases\n0\tPreparation\n', 1, 'Frame\tPhases', 'the header'),
    ('phase', '', 1, '', 'the header'),
    ('phase', 'Frame\tPhase\n', 2, '', 'at least one row'),
    ('phase', 'Frame\tPhase\n0\tPreparation\textra\n', 2, '0\tPreparation\textra',
     '2 tab-separated columns'),
    ('phase', 'Frame\tPhase\n0 Preparation\n', 2, '0 Preparation', '2 tab-separated columns'),
    ('phase', 'Frame\tPhase\n0\tPreparation\n1\tPrep\n', 3, '1\tPrep', 'a phase name, one of'),
    ('phase', 'Frame\tPhase\nzero\tPreparation\n', 2, 'zero\tPreparation', 'frame index 0'),
    ('phase', 'Frame\tPhase\n0\tPreparation\n2\tPreparation\n', 3, '2\tPreparation',
     'frame index 1'),
    ('phase', 'Frame\tPhase\n0\tPreparation\n\n1\tPreparation\n', 3, '',
     '2 tab-separated columns'),
    ('tool', TOOL_HEADER.replace('Hook\tScissors', 'Scissors\tHook') + '\n0' + '\t0' * 7, 1,
     TOOL_HEADER.replace('Hook\tScissors', 'Scissors\tHook'), 'the header'),
    ('tool', f'{TOOL_HEADER}\n0\t1\t0\t2\t0\t0\t0\t0\n', 2, '0\t1\t0\t2\t0\t0\t0\t0',
     "0 or 1 for Hook, not '2'"),
    ('tool', f'{TOOL_HEADER}\n0\t1\t0\t0\t0\t0\t0\n', 2, '0\t1\t0\t0\t0\t0\t0', '8 tab-separated'),
    ('tool', f'{TOOL_HEADER}\n0' + '\t0' * 7 + '\n24' + '\t0' * 7 + '\n', 3, '24' + '\t0' * 7,
     'frame index 25'),
]


@pytest.mark.parametrize('kind, text, line, offending, expected', MALFORMED)
def test_malformed_annotation_names_file_line_text_and_expectation(tmp_path, kind, text, line,
                                                                   offending, expected):
    path = tmp_path / f'video07-{kind}.txt'
    path.write_text(text)
    read = annotations.read_phases if kind == 'phase' else annotations.read_tools
    with pytest.raises(annotations.AnnotationError) as info:
        read(path)
    error = info.value
    assert isinstance(error, ValueError)
    assert (error.source, error.line_number, error.text) == (str(path), line, offending)
    message = str(error)
    assert f'{path}, line {line}: got {offending!r}' in message
    assert expected in message


def test_annotation_error_survives_pickling():  # it may be raised in a worker process
    error = annotations.AnnotationError('a.txt', 3, 'x', 'y')
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.line_number) == (str(error), 3)


# ----------------------------------------------------------------------------------------------
# Generated manual dir
# ----------------------------------------------------------------------------------------------
def test_fake_data_phases_are_distinguishable_and_frames_readable(tmp_path):
    phases = [p for p in annotations.PHASES for _ in range(10)]
    root = fake_data.make_manual_dir(tmp_path, [3], 70, phases={3: phases}, distinguishable=True,
                                     crlf=True)
    assert b'\r\n' in (root / 'phase_annotations' / 'video03-phase.txt').read_bytes()
    assert annotations.read_phases(root / 'phase_annotations' / 'video03-phase.txt').tolist() == \
        [annotations.PHASES.index(p) for p in phases]
    assert len(annotations.read_tools(root / 'tool_annotations' / 'video03-tool.txt').frames) == 3
    for index, _, frame in iter_frames(root / 'videos' / 'video03.mp4'):
        assert testing.read_index(frame) == index
        colour = frame.reshape(-1, 3).mean(0)
        distances = np.linalg.norm(fake_data.PHASE_TINTS - (colour - colour.mean()), axis=1)
        nearest = np.argmin(distances)
        assert nearest == index // 10, f'frame {index}: colour {colour}'


def test_fake_data_broken_and_missing_videos(tmp_path):
    root = fake_data.make_manual_dir(tmp_path, [1, 2, 3, 4], 30, corrupt=[1], empty=[2],
                                     truncated=[3], missing=[4])
    for number in (1, 2, 3):
        with pytest.raises(VideoReadError):
            list(iter_frames(root / 'videos' / f'video0{number}.mp4'))
    assert not (root / 'videos' / 'video04.mp4').exists()
    assert (root / 'phase_annotations' / 'video04-phase.txt').exists()


# ----------------------------------------------------------------------------------------------
# Builder on generated data
# ----------------------------------------------------------------------------------------------
# video -> (frames, 1-fps examples expected); 3: phase file 60 rows, 4: 2 tool rows (clipped).
READABLE = {1: (76, 4), 2: (51, 3), 3: (100, 3), 4: (60, 2)}
SMALL = c80.Cholec80Config(name='small', image_size=(32, 48),
                           splits={'train': [1, 5], 'validation': [3, 6], 'test': [2, 4, 7, 8]})


@pytest.fixture(scope='module')
def manual_dir(tmp_path_factory):
    phases_1 = ['Preparation'] * 30 + ['ClippingCutting'] * 46
    frames = {n: f for n, (f, _) in READABLE.items()} | {5: 30, 6: 30, 7: 30, 8: 76}
    return fake_data.make_manual_dir(
        tmp_path_factory.mktemp('cholec80_manual'), range(1, 9), frames,
        phases={1: phases_1}, tools={1: np.eye(7, dtype=bool)[[0, 2, 4, 6]]},
        phase_frames={3: 60}, tool_rows={4: 2}, corrupt=[5], empty=[6], missing=[7],
        truncated=[8], distinguishable=True)


@pytest.fixture(scope='module')
def small(manual_dir, tmp_path_factory):
    return build(manual_dir, tmp_path_factory.mktemp('cholec80_data'), SMALL)


def test_every_stored_frame_is_the_one_labelled(small, manual_dir):
    seen = {}
    for split in SMALL.splits:
        for ex in examples(small, split):
            video = ex['video_id'].decode()
            index = int(ex['frame_index'])
            phases = annotations.read_phases(manual_dir / 'phase_annotations'
                                             / f'{video}-phase.txt')
            tools = annotations.read_tools(manual_dir / 'tool_annotations' / f'{video}-tool.txt')
            assert ex['image'].shape == (32, 48, 3)
            assert testing.read_index(ex['image']) == index
            assert ex['timestamp_s'] == pytest.approx(index / 25)
            assert ex['phase'] == phases[index]
            assert ex['tools'].tolist() == tools.present[index // 25].tolist()
            seen.setdefault(video, []).append(index)
    expected = {f'video{n:02d}': list(range(0, 25 * count, 25))
                for n, (_, count) in READABLE.items()}
    assert {video: sorted(indices) for video, indices in seen.items()} == expected


def test_custom_phases_and_tools_reach_the_examples(small):
    video1 = sorted((int(ex['frame_index']), int(ex['phase']), ex['tools'].tolist())
                    for ex in examples(small, 'train'))
    eye = np.eye(7, dtype=bool)
    assert video1 == [(0, 0, eye[0].tolist()), (25, 0, eye[2].tolist()),
                      (50, 2, eye[4].tolist()), (75, 2, eye[6].tolist())]


def test_splits_are_disjoint_and_follow_the_config(small):
    videos = {split: {ex['video_id'].decode() for ex in examples(small, split)}
              for split in SMALL.splits}
    assert videos == {'train': {'video01'}, 'validation': {'video03'},
                      'test': {'video02', 'video04'}}
    assert {split: info.num_examples for split, info in small.info.splits.items()} == {
        'train': 4, 'validation': 3, 'test': 5}  # 3 and 4 clipped to the shortest annotation


def test_interrupted_build_rerun_completes_with_the_same_examples(manual_dir, small, tmp_path,
                                                                  monkeypatch):
    real, calls = generation._safe_process, []

    def dies_on_the_third_video(job):
        calls.append(job)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C, or the machine going away, mid-build
        return real(job)

    monkeypatch.setattr(generation, '_safe_process', dies_on_the_third_video)
    with pytest.raises(KeyboardInterrupt):
        build(manual_dir, tmp_path, SMALL)
    monkeypatch.undo()
    assert not c80.Builder(config=SMALL, data_dir=str(tmp_path)).is_prepared()
    rebuilt = build(manual_dir, tmp_path, SMALL)
    for split in SMALL.splits:
        assert [(e['video_id'], e['frame_index'], e['image'].tobytes())
                for e in examples(rebuilt, split)] == [
            (e['video_id'], e['frame_index'], e['image'].tobytes()) for e in examples(small, split)]
    assert not list(tmp_path.rglob('incomplete.*'))  # nothing half-written left behind


def test_unreadable_and_absent_videos_are_skipped_and_reported(small):
    folder = small.data_path
    assert folder == small.data_dir_root / 'cholec80' / 'small' / '1.0.0'
    assert not list(folder.parent.glob('*incomplete*'))
    reports = {split: json.loads((folder / f'skipped_videos_{split}.json').read_text())
               for split in SMALL.splits}
    assert {split: (r['videos_total'], r['videos_skipped'], [s['video'] for s in r['skipped']])
            for split, r in reports.items()} == {
        'train': (2, 1, ['video05']),
        'validation': (2, 1, ['video06']),
        'test': (4, 2, ['video07', 'video08'])}
    reasons = {s['video']: s['reason'] for r in reports.values() for s in r['skipped']}
    assert all(f'{video}.mp4' in reason for video, reason in reasons.items())
    assert 'cannot open' in reasons['video05'] and 'not found' in reasons['video07']


def _task(manual_dir, number, image_size=(16, 16)):
    name = f'video{number:02d}'
    return c80.VideoTask(
        name, str(manual_dir / 'videos' / f'{name}.mp4'),
        annotations.read_phases(manual_dir / 'phase_annotations' / f'{name}-phase.txt'),
        annotations.read_tools(manual_dir / 'tool_annotations' / f'{name}-tool.txt'), image_size)


def test_process_video_keys_and_length_mismatch_log(manual_dir, caplog):
    assert [key for key, _ in c80.process_video(_task(manual_dir, 1))] == [
        'video01_000000', 'video01_000025', 'video01_000050', 'video01_000075']
    with caplog.at_level(logging.WARNING, logger=c80.__name__):
        assert len(c80.process_video(_task(manual_dir, 3))) == 3
    assert 'video03: lengths differ: video 100 frames, phase annotation 60 frames, tool ' \
           'annotation 3 rows' in caplog.text


def test_malformed_annotation_stops_the_build(manual_dir, tmp_path):
    root = tmp_path / 'manual'
    shutil.copytree(manual_dir, root)
    phase_file = root / 'phase_annotations' / 'video02-phase.txt'
    lines = phase_file.read_text().split('\n')
    lines[5] = '4\tCalot'
    phase_file.write_text('\n'.join(lines))
    with pytest.raises(annotations.AnnotationError, match=r'video02-phase.txt, line 6: got '
                       r"'4\\tCalot', expected a phase name"):
        build(root, tmp_path / 'data', SMALL)


def test_missing_or_empty_manual_dir_names_the_dir_and_layout(tmp_path):
    with pytest.raises(AssertionError, match='videos/video01.mp4') as info:
        build(tmp_path / 'nowhere', tmp_path / 'data', SMALL)
    assert str(tmp_path / 'nowhere') in str(info.value)
    (tmp_path / 'manual' / 'videos').mkdir(parents=True)
    (tmp_path / 'manual' / 'videos' / 'video99.mp4').touch()
    with pytest.raises(FileNotFoundError, match='No video of config small found') as info:
        build(tmp_path / 'manual', tmp_path / 'data', SMALL)
    assert str(tmp_path / 'manual' / 'videos') in str(info.value)
    assert 'phase_annotations/video01-phase.txt' in str(info.value)


def test_manual_dir_may_hold_the_release_in_a_cholec80_folder(tmp_path):
    shutil.copytree(fake_data.DUMMY_DATA_DIR, tmp_path / 'manual' / 'cholec80')
    config = c80.Cholec80Config(name='nested', image_size=(16, 16), splits={'train': [33]})
    builder = build(tmp_path / 'manual', tmp_path / 'data', config)
    assert builder.info.splits['train'].num_examples == 2


def test_split_with_no_video_present_is_left_out_and_reported(manual_dir, tmp_path):
    config = c80.Cholec80Config(name='partial', image_size=(16, 16),
                                splits={'train': [2], 'test': [7, 9]})
    builder = build(manual_dir, tmp_path, config)
    assert list(builder.info.splits) == ['train']
    report = json.loads((builder.data_path / 'skipped_videos_test.json').read_text())
    assert [s['video'] for s in report['skipped']] == ['video07', 'video09']


# ----------------------------------------------------------------------------------------------
# Registration, configs and the committed dummy data
# ----------------------------------------------------------------------------------------------
def test_registered_with_the_three_split_conventions():
    builder = tfds.builder('cholec80')
    assert (builder.name, builder.builder_config.name) == ('cholec80', '40_40')
    assert c80.FPS == 25 and len(c80.PHASES) == 7 and len(c80.TOOLS) == 7
    assert builder.info.features['phase'].names == list(c80.PHASES)
    assert builder.info.features['tools'].shape == (7,)
    assert builder.builder_config.image_size == (256, 256)
    ranges = {name: {split: (min(v), max(v)) for split, v in config.splits.items()}
              for name, config in c80.Builder.builder_configs.items()}
    assert ranges == {'40_40': {'train': (1, 40), 'test': (41, 80)},
                      '40_8_32': {'train': (1, 40), 'validation': (41, 48), 'test': (49, 80)},
                      '32_8_40': {'train': (1, 32), 'validation': (33, 40), 'test': (41, 80)}}
    assert 'Twinanda' in builder.info.citation
    assert 'GallbladderRetraction' in builder.info.description


@pytest.mark.parametrize('splits, message', [
    ({'train': [1, 2], 'test': [2]}, 'video 2 is in both split train and split test'),
    ({'train': [0]}, 'outside 1..80'),
])
def test_config_rejects_overlapping_or_unknown_videos(splits, message):
    with pytest.raises(ValueError, match=message):
        c80.Cholec80Config(name='bad', splits=splits)


# Dummy data: videos 1 (3 examples), 33 (2), 41 (3, phase file 2 frames short), 49 (3).
DUMMY_SPLITS = {
    '40_40': {'train': 5, 'test': 6},
    '40_8_32': {'train': 5, 'validation': 3, 'test': 3},
    '32_8_40': {'train': 3, 'validation': 2, 'test': 6},
}


def test_dummy_data_builds_every_config(tmp_path):
    """What `DatasetBuilderTestCase` checks (below), without TensorFlow: every config prepares
    from `dummy_data/` with the expected split sizes, no example in two splits, reload works."""
    for name, sizes in DUMMY_SPLITS.items():
        builder = build(fake_data.DUMMY_DATA_DIR, tmp_path, name,
                        num_workers=2 if name == '40_40' else 1)  # once through worker processes
        assert {s: info.num_examples for s, info in builder.info.splits.items()} == sizes
        keys = [{(ex['video_id'], int(ex['frame_index'])) for ex in examples(builder, s)}
                for s in sizes]
        assert sum(map(len, keys)) == len(set().union(*keys)) == sum(sizes.values())
        reloaded = tfds.builder(f'cholec80/{name}', data_dir=str(tmp_path))
        assert {s: info.num_examples for s, info in reloaded.info.splits.items()} == sizes
    source = tfds.data_source('cholec80/40_40', data_dir=str(tmp_path), split='train')
    assert len(source) == 5 and source[0]['image'].shape == (256, 256, 3)


def test_dummy_data_is_what_the_generator_writes(tmp_path):
    fake_data.write_dummy_data(tmp_path)
    committed = sorted(p.relative_to(fake_data.DUMMY_DATA_DIR)
                       for p in fake_data.DUMMY_DATA_DIR.rglob('*') if p.is_file())
    assert committed == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*') if p.is_file())
    for path in committed:  # the annotations byte for byte (video encoders may differ)
        if path.suffix == '.txt':
            assert (tmp_path / path).read_bytes() == (fake_data.DUMMY_DATA_DIR / path).read_bytes()
    assert sum((fake_data.DUMMY_DATA_DIR / p).stat().st_size for p in committed) < 200_000


try:  # needs TensorFlow (tf.test.TestCase, as_dataset) and dill, which this venv does not have
    from tensorflow_datasets.testing import dataset_builder_testing
except ImportError as e:
    dataset_builder_testing = None
    _NO_TFDS_TESTING = f'tfds.testing.DatasetBuilderTestCase needs TensorFlow and dill ({e})'

if dataset_builder_testing is not None:
    class Cholec80DummyDataTest(dataset_builder_testing.DatasetBuilderTestCase):
        """TFDS's own builder checks on `dummy_data/` (registration, generation, as_dataset)."""

        DATASET_CLASS = c80.Builder
        BUILDER_CONFIG_NAMES_TO_TEST = ['40_8_32']
        SPLITS = DUMMY_SPLITS['40_8_32']
        SKIP_CHECKSUMS = True  # manual download: no URL

    class Cholec80DummyData4040Test(Cholec80DummyDataTest):
        BUILDER_CONFIG_NAMES_TO_TEST = ['40_40']
        SPLITS = DUMMY_SPLITS['40_40']

    class Cholec80DummyData32840Test(Cholec80DummyDataTest):
        BUILDER_CONFIG_NAMES_TO_TEST = ['32_8_40']
        SPLITS = DUMMY_SPLITS['32_8_40']
else:
    @pytest.mark.skip(reason=_NO_TFDS_TESTING)
    def test_tfds_dataset_builder_test_case():
        """Placeholder that reports why TFDS's DatasetBuilderTestCase did not run."""


def test_misleading_seconds_change_whole_seconds_to_another_phase():
    true = np.repeat(np.arange(7), 250)  # 70 s, 10 s per phase
    np.testing.assert_array_equal(fake_data.mislead(true, 0.0, seed=1), true)
    tinted = fake_data.mislead(true, 0.3, seed=1)
    per_second = tinted.reshape(70, 25)
    assert (per_second == per_second[:, :1]).all()  # constant within each second
    changed = per_second[:, 0] != true[::25]
    assert 10 <= changed.sum() <= 32  # ~30% of 70 seconds
    np.testing.assert_array_equal(fake_data.mislead(true, 0.3, seed=1), tinted)  # seeded
