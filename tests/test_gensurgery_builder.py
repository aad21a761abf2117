"""GenSurgery: URL lists, the TFDS builder on generated videos and dummy data, the downloader, Beam.

Generated videos draw each frame's index (`tfds_builders.testing`), so a test can read back from
the stored JPEG which source frame an example holds. Nothing here needs the network or TensorFlow.
"""
import hashlib
import importlib.util
import json
import logging
import os
import pathlib
import random
import re
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds

from gsvit_jax.data.frames import FrameTable, open_prepared
from tfds_builders import testing
from tfds_builders.gensurgery import Builder, BuilderConfig, download, fake_data, url_lists
from tfds_builders.gensurgery.fake_data import FakeVideo
from tfds_builders.gensurgery.gensurgery_dataset_builder import (assign_splits, example_key,
                                                                  split_bucket)

ROOT = pathlib.Path(__file__).parents[1]
RELEASED_LISTS = ROOT.parent / 'shared' / 'data' / 'gensurgery_url_lists'
needs_released_lists = pytest.mark.skipif(
    not RELEASED_LISTS.is_dir(), reason=f'released URL lists not found at {RELEASED_LISTS}')

# ------------------------------------------------------------------------------------------------
# URL lists
# ------------------------------------------------------------------------------------------------
ID = 'XvDkCj7vKik'


@pytest.mark.parametrize('url', [
    f'https://youtu.be/{ID}',
    f'https://youtu.be/{ID}?si=FjhSFpuj-FvyfFAs',
    f'  https://youtu.be/{ID}/  ',
    f'https://www.youtube.com/watch?v={ID}',
    f'https://www.youtube.com/watch?v={ID}&t=42s',
    f'https://www.youtube.com/watch?feature=share&v={ID}',
    f'https://m.youtube.com/watch?v={ID}#t=3',
    f'https://youtube.com/shorts/{ID}?feature=share',
    f'https://www.youtube.com/embed/{ID}',
    f'www.youtube.com/watch?v={ID}',
    ID,
])
def test_video_id_accepts_every_url_form(url):
    assert url_lists.video_id(url) == ID


@pytest.mark.parametrize('url, reason', [
    ('https://www.youtube.com/watch?v=y-dzvsXvmk', '10 characters'),  # as in robotic_chole.txt
    (f'https://youtu.be/{ID}x', '12 characters'),
    ('https://youtu.be/', '0 characters'),
    ('https://www.youtube.com/watch?list=PL123', '0 characters'),
    (f'https://example.com/watch?v={ID}', 'not a YouTube video URL'),
    ('https://www.youtube.com/channel/UC12345', 'not a YouTube video URL'),
])
def test_video_id_rejects_malformed_urls(url, reason):
    with pytest.raises(ValueError, match=reason):
        url_lists.video_id(url)


def test_parse_lists_tolerates_crlf_blanks_duplicates_and_reports_malformed_lines():
    lists = url_lists.parse_lists({
        'hernia': f'https://youtu.be/{ID}\r\n\r\n  \r\nhttps://youtu.be/{ID}?si=x\r\n'
                  'https://www.youtube.com/watch?v=aaaaaaaaaaa\r\n',
        'unsorted': 'https://www.youtube.com/watch?v=aaaaaaaaaaa\n'
                    'https://www.youtube.com/watch?v=truncated\n\n',
        'IBS': '',
    })
    assert lists.num_lines == 5
    assert lists.url_forms == {'youtu.be': 2, 'watch': 3}
    assert lists.categories == {ID: ('hernia',), 'aaaaaaaaaaa': ('hernia', 'unsorted')}
    assert [(m.category, m.line, m.text) for m in lists.malformed] == [
        ('unsorted', 2, 'https://www.youtube.com/watch?v=truncated')]
    assert 'unsorted:2' in lists.summary()


@pytest.mark.parametrize('categories, primary', [
    (('cholestectomy', 'robotic_chole'), 'cholestectomy'),
    (('colon_cancer', 'hernia'), 'hernia'),  # a procedure beats a non-procedure list
    (('IBS', 'unsorted'), 'IBS'),  # any named list beats unsorted
    (('unsorted',), 'unsorted'),
    (('colectomy', 'unsorted', 'video_atlas'), 'colectomy'),
])
def test_primary_category(categories, primary):
    assert url_lists.primary_category(categories) == primary


@pytest.mark.parametrize('name, expected', [
    (f'{ID}.mp4', ID),  # this project's downloader
    (f'{ID}.Laparoscopic chole. Part 2.webm', ID),  # original downloader, youtu.be URL
    (f'watch?v={ID}.Lap chole.mkv', ID),  # original downloader, watch?v= URL
    (f'watch#v={ID}.Lap chole.mov', ID),
    (f'watch？v={ID}.Lap chole.mp4', ID),  # yt-dlp's full-width question mark
    (f'Lap chole [{ID}].avi', ID),  # yt-dlp's default template
    ('short.mp4', None),
    ('Laparoscopic cholecystectomy.mp4', None),
])
def test_video_id_from_filename(name, expected):
    assert url_lists.video_id_from_filename(name) == expected


def test_find_videos_recurses_and_ignores_partial_downloads(tmp_path):
    for name in [f'colectomy/{ID}.Title.mp4', f'{ID}.webm', 'bbbbbbbbbbb.mp4.part',
                 'ccccccccccc.en.vtt', 'ddddddddddd.MKV']:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b'x')
    found, duplicates = url_lists.find_videos(tmp_path)
    assert found == {ID: f'{ID}.webm', 'ddddddddddd': 'ddddddddddd.MKV'}
    assert duplicates == {ID: [f'{ID}.webm', f'colectomy/{ID}.Title.mp4']}


@needs_released_lists
def test_released_lists_counts():
    lists = url_lists.read_list_dir(RELEASED_LISTS)
    assert sorted(p.stem for p in RELEASED_LISTS.glob('*.txt')) == sorted(url_lists.CATEGORIES)
    assert lists.num_lines == 3645
    assert lists.url_forms == {'youtu.be': 1925, 'watch': 1720}
    # The spec gives 3,181 unique IDs: that counts robotic_chole.txt line 4 (`y-dzvsXvmk`, a cut-off
    # copy of `y-dzvsXvmk4` on line 36) as an ID. Valid 11-character IDs: 3,180.
    assert len(lists.categories) == 3180
    assert [(m.category, m.line) for m in lists.malformed] == [('robotic_chole', 4),
                                                                ('unsorted', 440)]
    assert 'y-dzvsXvmk4' in lists.categories
    # Spec: 382 IDs in more than one file; the lists give 381 (valid IDs or not).
    assert sum(len(c) > 1 for c in lists.categories.values()) == 381
    all_cats = list(lists.categories.values())
    per_file = {c: sum(c in cats for cats in all_cats) for c in url_lists.CATEGORIES}
    assert per_file['colectomy'] == 360 and per_file['colorectal_disease'] == 127
    assert per_file['davinci_instructions'] == 159 and per_file['unsorted'] == 1497
    assert per_file['robotic_chole'] == 198  # spec 199 includes the truncated ID
    in_unsorted = [c for c in lists.categories.values() if 'unsorted' in c]
    assert sum(len(c) > 1 for c in in_unsorted) == 258
    assert sum({'robotic_chole', 'cholestectomy'} <= set(c) for c in all_cats) == 18


@needs_released_lists
def test_checksums_register_every_released_list():
    infos = Builder.url_infos
    assert set(infos) == set(url_lists.URLS.values())
    for category, url in url_lists.URLS.items():
        data = (RELEASED_LISTS / f'{category}.txt').read_bytes()
        assert infos[url].size == len(data)
        assert infos[url].checksum == hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------------
# Builder on generated videos
# ------------------------------------------------------------------------------------------------
VIDEOS = (
    FakeVideo('twentyfive1', ('colectomy', 'unsorted', 'video_atlas'), seconds=5, fps=25),
    FakeVideo('ntsc2997fps', ('robotic_chole', 'cholestectomy'), seconds=5, fps=30000 / 1001,
              filename='watch?v=ntsc2997fps.Robotic cholecystectomy.mp4'),
    FakeVideo('herniaSub01', ('hernia',), seconds=2, fps=25,
              filename='hernia/herniaSub01.TAPP hernia repair.mkv'),
    FakeVideo('ibsWatchHsh', ('IBS', 'unsorted'), seconds=2, fps=25,
              filename='watch#v=ibsWatchHsh.IBS talk.mov'),
    FakeVideo('corruptFile', ('appendectomy',), kind='corrupt'),
    FakeVideo('emptyFile01', ('liver_resection',), kind='empty'),
    FakeVideo('missingOne1', ('splenectomy', 'hernia'), kind='missing'),
)
CONFIG = BuilderConfig(name='test_1fps', fps=1, image_size=(48, 64), validation_percent=50)
# The sampled frames: the first frame at or after each whole second (half a frame early is ok).
EXPECTED_FRAMES = {'twentyfive1': [0, 25, 50, 75, 100], 'ntsc2997fps': [0, 30, 60, 90, 120],
                   'herniaSub01': [0, 25], 'ibsWatchHsh': [0, 25]}


def build(manual_dir, data_dir, config=CONFIG, beam_options=None) -> Builder:
    builder = Builder(config=config, data_dir=data_dir, file_format='array_record')
    builder.num_workers = 1
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir, beam_options=beam_options))
    return builder


def read_split(builder, split) -> list[dict]:
    source = builder.as_data_source(split=split)
    return [source[i] for i in range(len(source))]


@pytest.fixture(scope='module')
def manual_dir(tmp_path_factory):
    directory = fake_data.write_manual_dir(
        tmp_path_factory.mktemp('manual'), VIDEOS,
        extra_lines=['https://www.youtube.com/watch?v=y-dzvsXvmk'])
    testing.write_video(directory / 'unlistedVid.mp4', testing.index_frames(5))
    (directory / 'missingOne1.mp4.part').write_bytes(b'partial download')
    return directory


class Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope='module')
def build_messages():
    """What the builders log (INFO and above) while `built` builds."""
    handler, logger = Messages(), logging.getLogger('tfds_builders')
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.messages
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture(scope='module')
def built(manual_dir, tmp_path_factory, build_messages):
    builder = build(manual_dir, tmp_path_factory.mktemp('data'))
    return builder, {split: read_split(builder, split) for split in builder.info.splits}


def test_registered_name_and_default_config(tmp_path):
    builder = tfds.builder('gensurgery', data_dir=tmp_path)
    assert isinstance(builder, Builder)
    assert (builder.builder_config.name, builder.builder_config.fps,
            builder.builder_config.image_size) == ('1fps_224', 1.0, 224)
    assert builder.info.features['category'].names == list(url_lists.CATEGORIES)


def test_samples_the_right_frames_at_1fps(built):
    _, splits = built
    by_video = {}
    for example in (e for examples in splits.values() for e in examples):
        by_video.setdefault(example['video_id'].decode(), []).append(example)
    assert set(by_video) == set(EXPECTED_FRAMES)
    for video_id, examples in by_video.items():
        indices = [int(e['frame_index']) for e in examples]
        assert indices == EXPECTED_FRAMES[video_id], video_id  # stored in time order, too
        assert [testing.read_index(e['image']) for e in examples] == indices, video_id
        assert [float(e['timestamp_s']) for e in examples] == pytest.approx(
            list(range(len(indices))), abs=0.02), video_id
        assert all(e['image'].shape == (48, 64, 3) for e in examples)


def test_categories_and_primary_category(built):
    builder, splits = built
    names = builder.info.features['category'].names
    labels = {e['video_id'].decode(): (names[e['category']],
                                       sorted(names[c] for c in e['categories']))
              for examples in splits.values() for e in examples}
    assert labels['ntsc2997fps'] == ('cholestectomy', ['cholestectomy', 'robotic_chole'])
    assert labels['twentyfive1'] == ('colectomy', ['colectomy', 'unsorted', 'video_atlas'])
    assert labels['ibsWatchHsh'] == ('IBS', ['IBS', 'unsorted'])


def test_splits_are_disjoint_by_video_and_follow_the_hash(built):
    _, splits = built
    videos = {split: {e['video_id'].decode() for e in examples}
              for split, examples in splits.items()}
    assert videos['train'].isdisjoint(videos['validation'])
    readable = assign_splits(sorted(EXPECTED_FRAMES) + ['corruptFile', 'emptyFile01'], 50)
    assert videos == {split: set(ids) & set(EXPECTED_FRAMES) for split, ids in readable.items()}


def test_unreadable_videos_are_skipped_and_reported(built):
    builder, _ = built
    reports = {split: json.loads((builder.data_path / f'skipped_videos_{split}.json').read_text())
               for split in ('train', 'validation')}
    skipped = {s['video']: s['reason'] for r in reports.values() for s in r['skipped']}
    assert set(skipped) == {'corruptFile.mp4', 'emptyFile01.mp4'}
    assert 'cannot open' in skipped['corruptFile.mp4']
    assert re.search('no (video stream|decodable frames)', skipped['emptyFile01.mp4'])
    assert sum(r['videos_total'] for r in reports.values()) == 6


def test_missing_unlisted_and_malformed_are_reported(built):
    builder, _ = built
    report = json.loads((builder.data_path / 'missing_videos.json').read_text())
    assert (report['listed_videos'], report['found_videos'], report['missing_videos']) == (7, 6, 1)
    assert report['missing'] == [{'video_id': 'missingOne1',
                                  'categories': ['hernia', 'splenectomy']}]
    assert report['unlisted_files'] == ['unlistedVid.mp4']
    assert [(m['category'], m['line']) for m in report['malformed_lines']] == [('unsorted', 3)]


def test_build_messages_name_the_final_dataset_folder(built, build_messages):
    """Not TFDS's temporary `incomplete.*` folder, which is renamed when the build ends."""
    builder, _ = built
    reports = [m for m in build_messages if 'skipped_videos_' in m or 'missing_videos.json' in m]
    assert len(reports) >= 2  # skipped videos (a split) and link rot
    for message in reports:
        assert str(builder.data_path) in message, message
    assert not [m for m in build_messages if 'incomplete.' in m]


def test_missing_report_carries_the_downloader_status(tmp_path):
    videos = [FakeVideo('goodVideo01', ('hernia',), seconds=1),
              FakeVideo('missingOne1', ('hernia',), kind='missing')]
    manual = fake_data.write_manual_dir(tmp_path / 'manual', videos)
    download.StatusLog(manual / download.STATUS_FILE).append('missingOne1', download.UNAVAILABLE,
                                                             'private: Private video')
    builder = build(manual, tmp_path / 'data')
    missing = json.loads((builder.data_path / 'missing_videos.json').read_text())['missing']
    assert missing[0]['download_status'] == 'unavailable'
    assert missing[0]['reason'] == 'private: Private video'


def test_single_video_custom_config_builds_without_a_validation_split(tmp_path):
    manual = fake_data.write_manual_dir(
        tmp_path / 'manual', [FakeVideo('single30fps', ('hernia',), seconds=2, fps=30)])
    config = BuilderConfig(name='demo_2fps', fps=2, image_size=32, validation_percent=5)
    builder = build(manual, tmp_path / 'data', config)
    assert set(builder.info.splits) == {'train'}
    examples = read_split(builder, 'train')
    assert [int(e['frame_index']) for e in examples] == [0, 15, 30, 45]
    assert [testing.read_index(e['image']) for e in examples] == [0, 15, 30, 45]
    assert examples[0]['image'].shape == (32, 32, 3)


def test_split_of_only_unreadable_videos_fails_clearly(tmp_path):
    videos = [FakeVideo('goodVideo01', ('hernia',), seconds=1),
              FakeVideo('corruptOne1', ('hernia',), kind='corrupt')]  # lowest bucket: validation
    manual = fake_data.write_manual_dir(tmp_path / 'manual', videos)
    with pytest.raises(RuntimeError, match="split 'validation': none of its 1 video"):
        build(manual, tmp_path / 'data', BuilderConfig(name='t', validation_percent=5))


def test_no_video_found_names_the_manual_dir(tmp_path):
    manual = fake_data.write_manual_dir(tmp_path / 'manual',
                                        [FakeVideo('missingOne1', ('hernia',), kind='missing')])
    with pytest.raises(FileNotFoundError, match=str(manual)):
        build(manual, tmp_path / 'data')


def test_assign_splits_is_stable_and_keeps_validation_non_empty():
    ids = [f'video{i:06d}' for i in range(400)]
    splits = assign_splits(ids, 5)
    assert set(splits['validation']) == {v for v in ids if split_bucket(v) < 5}
    assert 5 <= len(splits['validation']) <= 40
    assert assign_splits(list(reversed(ids)), 5) == splits
    # tiny dirs: the lowest bucket moves to validation when the hash leaves it empty
    assert assign_splits(['goodVideo01', 'corruptOne1'], 5) == {
        'train': ['goodVideo01'], 'validation': ['corruptOne1']}
    assert assign_splits(['goodVideo01', 'corruptOne1'], 0)['validation'] == []
    assert assign_splits(['goodVideo01'], 5) == {'train': ['goodVideo01'], 'validation': []}


def test_example_keys_sort_like_video_then_frame():
    pairs = [('-aaaaaaaaaa', 7), ('Aaaaaaaaaaa', 0), ('Aaaaaaaaaaa', 25), ('_aaaaaaaaaa', 3),
             ('zzzzzzzzzzz', 2 ** 24 - 1)]
    keys = [example_key(*p) for p in pairs]
    assert keys == sorted(keys) and max(keys) < 2 ** 128
    with pytest.raises(ValueError):
        example_key('Aaaaaaaaaaa', 2 ** 24)


# ------------------------------------------------------------------------------------------------
# Committed dummy data
# ------------------------------------------------------------------------------------------------
def test_dummy_data_is_what_write_dummy_data_makes(tmp_path):
    fresh = fake_data.write_dummy_data(tmp_path / 'dummy')
    files = lambda d: sorted(p.relative_to(d).as_posix() for p in d.rglob('*') if p.is_file())
    assert files(fake_data.DUMMY_DATA) == files(fresh)
    assert sum(p.stat().st_size for p in fake_data.DUMMY_DATA.rglob('*') if p.is_file()) < 300_000


def test_dummy_data_builds_without_tensorflow(tmp_path):
    """What `DatasetBuilderTestCase` checks (below), with array_record and no TensorFlow:
    downloads come from dummy_data and are registered in checksums.tsv, split sizes, disjoint
    splits, a reloaded builder sees the same splits."""
    requested = []

    def fake_download(self, urls):
        requested.extend(urls.values())
        return {c: fake_data.DUMMY_DATA / fake_data.DUMMY_LISTS / f'{c}.txt' for c in urls}

    with mock.patch.object(tfds.download.DownloadManager, 'download', fake_download):
        builder = build(fake_data.DUMMY_DATA, tmp_path, config=None)
    assert set(requested) <= set(Builder.url_infos)
    assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == \
        fake_data.DUMMY_SPLITS
    reloaded = tfds.builder_from_directory(builder.data_path)
    assert {s: reloaded.info.splits[s].num_examples for s in reloaded.info.splits} == \
        fake_data.DUMMY_SPLITS
    videos = {s: {e['video_id'] for e in read_split(reloaded, s)} for s in fake_data.DUMMY_SPLITS}
    assert videos == {'train': {b'dummyVideoA', b'dummyVideoC'}, 'validation': {b'dummyVideoK'}}


try:  # tf.test.TestCase, as_dataset and tfrecord need TensorFlow; the module imports dill
    from tensorflow_datasets.testing import dataset_builder_testing
except ImportError as e:
    dataset_builder_testing = None
    _NO_TFDS_TESTING = (f'tfds.testing.DatasetBuilderTestCase needs TensorFlow and dill ({e}); '
                        'test_dummy_data_builds_without_tensorflow runs its checks')

if dataset_builder_testing is not None:

    class GensurgeryDummyDataTest(dataset_builder_testing.DatasetBuilderTestCase):
        """TFDS's standard builder test on dummy_data/ (tfrecord, as_dataset)."""

        DATASET_CLASS = Builder
        SPLITS = fake_data.DUMMY_SPLITS
        DL_DOWNLOAD_RESULT = {c: f'{fake_data.DUMMY_LISTS}/{c}.txt' for c in url_lists.CATEGORIES}

        def _make_builder(self, config=None):
            builder = super()._make_builder(config)
            builder.num_workers = 1
            return builder

else:

    @pytest.mark.skip(reason=_NO_TFDS_TESTING)
    def test_dataset_builder_test_case():
        """Placeholder that reports why TFDS's DatasetBuilderTestCase did not run."""


# ------------------------------------------------------------------------------------------------
# Downloader (yt-dlp replaced by a fake)
# ------------------------------------------------------------------------------------------------
class FakeYtDlp:
    """Stands in for `YtDlpFetcher`: writes `<id>.mp4` or raises the message scripted for the ID."""

    def __init__(self, errors):
        self.errors, self.calls = dict(errors), []

    def __call__(self, video_id, out_dir):
        self.calls.append(video_id)
        if video_id in self.errors:
            raise RuntimeError(self.errors.pop(video_id))
        path = out_dir / f'{video_id}.mp4'
        path.write_bytes(b'video')
        return path


@pytest.mark.parametrize('message, status', [
    ("ERROR: [youtube] abc: Private video. Sign in if you've been granted access", 'unavailable'),
    ('ERROR: [youtube] abc: Video unavailable. This video has been removed by the uploader',
     'unavailable'),
    ('ERROR: [youtube] abc: Video unavailable. This video is no longer available because the '
     'YouTube account associated with this video has been terminated.', 'unavailable'),
    ('ERROR: [youtube] abc: Sign in to confirm your age. This video may be inappropriate for '
     'some users.', 'unavailable'),
    ('ERROR: [youtube] abc: Join this channel to get access to members-only content',
     'unavailable'),
    ('ERROR: [youtube] abc: The uploader has not made this video available in your country',
     'unavailable'),
    ('ERROR: unable to download video data: HTTP Error 429: Too Many Requests', 'failed'),
    ("ERROR: [youtube] abc: Sign in to confirm you’re not a bot", 'failed'),
    ('ERROR: [youtube] abc: Unable to download API page: <urlopen error [Errno -3] Temporary '
     'failure in name resolution>', 'failed'),
])
def test_classify_error(message, status):
    assert download.classify_error(message)[0] == status


def test_download_resumes_and_logs_one_status_line_per_attempt(tmp_path):
    (tmp_path / 'present0001.mp4').write_bytes(b'video')  # downloaded before
    download.StatusLog(tmp_path / 'status.tsv').append('gone0000001', 'unavailable', 'removed')
    ids = ['present0001', 'gone0000001', 'fresh000001', 'private0001', 'flaky000001']
    fetch = FakeYtDlp({'private0001': 'ERROR: [youtube] private0001: Private video',
                       'flaky000001': 'ERROR: HTTP Error 429: Too Many Requests'})
    sleeps = []
    counts = download.download_all(ids, tmp_path, fetch, sleep_s=2.0, sleep=sleeps.append,
                                   rng=random.Random(0))
    assert fetch.calls == ['fresh000001', 'private0001', 'flaky000001']
    assert counts == {'present': 1, 'known unavailable': 1, 'ok': 1, 'unavailable': 1, 'failed': 1}
    assert len(sleeps) == 2 and all(1.0 <= s <= 3.0 for s in sleeps)  # between attempts, jittered
    lines = (tmp_path / 'status.tsv').read_text().splitlines()
    assert lines[0].startswith('# id\tstatus')
    assert [line.split('\t')[:2] for line in lines[1:]] == [
        ['gone0000001', 'unavailable'], ['fresh000001', 'ok'], ['private0001', 'unavailable'],
        ['flaky000001', 'failed']]
    assert all(len(line.split('\t')) == 4 for line in lines[1:])

    # second run: only the failed one is tried again
    counts = download.download_all(ids, tmp_path, fetch, sleep=sleeps.append)
    assert fetch.calls[3:] == ['flaky000001']
    assert counts == {'present': 2, 'known unavailable': 2, 'ok': 1}
    assert download.read_status(tmp_path / 'status.tsv')['flaky000001'][0] == 'ok'


def test_interrupted_download_rerun_skips_the_finished_videos(tmp_path):
    ids = ['done0000001', 'cut00000001', 'next0000001']

    class DiesOnTheSecond(FakeYtDlp):
        def __call__(self, video_id, out_dir):
            if video_id == 'cut00000001':
                (out_dir / f'{video_id}.mp4.part').write_bytes(b'vi')  # yt-dlp's partial file
                raise KeyboardInterrupt  # Ctrl-C or a kill while it downloads
            return super().__call__(video_id, out_dir)

    with pytest.raises(KeyboardInterrupt):
        download.download_all(ids, tmp_path, DiesOnTheSecond({}), sleep=lambda s: None)
    fetch = FakeYtDlp({})
    counts = download.download_all(ids, tmp_path, fetch, sleep=lambda s: None)
    assert fetch.calls == ['cut00000001', 'next0000001']  # the finished one is not fetched again
    assert counts == {'present': 1, 'ok': 2}
    assert sorted(url_lists.find_videos(tmp_path)[0]) == sorted(ids)


def test_status_log_survives_an_interrupted_write(tmp_path):
    path = tmp_path / 'status.tsv'
    download.StatusLog(path).append('first000001', 'ok', 'first000001.mp4')
    with open(path, 'a') as f:
        f.write('cut00000001\tfai')  # killed mid-line
    log = download.StatusLog(path)
    log.append('next0000001', 'failed', 'HTTP Error 503\twith\ttabs\nand newline')
    assert download.read_status(path).keys() == {'first000001', 'next0000001'}
    last = path.read_text().splitlines()[-1]
    assert last.startswith('next0000001\tfailed\tHTTP Error 503 with tabs and newline\t')


def test_max_downloads_caps_attempts(tmp_path):
    fetch = FakeYtDlp({})
    counts = download.download_all([f'video{i:06d}' for i in range(5)], tmp_path, fetch,
                                   max_downloads=2, sleep=lambda s: None)
    assert len(fetch.calls) == 2 and counts['not attempted (--max-downloads)'] == 3


def test_cli_reads_lists_and_downloads_unique_ids(tmp_path):
    lists = tmp_path / 'lists'
    fake_data.write_lists(lists, [FakeVideo('aaaaaaaaaaa', ('hernia', 'unsorted')),
                                  FakeVideo('bbbbbbbbbbb', ('colectomy',))])
    fetch = FakeYtDlp({})
    download.main(['--out', str(tmp_path / 'out'), '--lists', str(lists), '--sleep', '0'], fetch)
    assert sorted(fetch.calls) == ['aaaaaaaaaaa', 'bbbbbbbbbbb']
    download.main(['--out', str(tmp_path / 'out'), '--lists', str(lists),
                   '--ids', 'https://youtu.be/ccccccccccc'], fetch)
    assert fetch.calls[2:] == ['ccccccccccc']


def test_pinned_lists_go_through_the_download_manager(tmp_path):
    def fake_download(self, urls):
        assert urls == url_lists.URLS
        return {c: fake_data.DUMMY_DATA / fake_data.DUMMY_LISTS / f'{c}.txt' for c in urls}

    with mock.patch.object(tfds.download.DownloadManager, 'download', fake_download):
        lists = download.pinned_lists(tmp_path)
    assert lists.ids == sorted(v.video_id for v in fake_data.DUMMY_VIDEOS)


def test_cli_without_yt_dlp_says_how_to_install(tmp_path, capsys):
    fake_data.write_lists(tmp_path / 'lists', [FakeVideo('aaaaaaaaaaa', ('hernia',))])
    with mock.patch.dict('sys.modules', {'yt_dlp': None}):
        with pytest.raises(SystemExit) as stopped:
            download.main(['--out', str(tmp_path / 'out'), '--lists', str(tmp_path / 'lists')])
    assert stopped.value.code == 2
    assert 'pip install -e ".[download]"' in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# Apache Beam
# ------------------------------------------------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec('apache_beam') is None,
                    reason='apache_beam is not installed (pip install -e ".[beam]")')
def test_beam_direct_runner_makes_the_same_examples(built, manual_dir, tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions
    local_builder, local_splits = built
    options = PipelineOptions(['--runner=DirectRunner', '--direct_num_workers=1'])
    beam_builder = build(manual_dir, tmp_path, beam_options=options)
    beam_splits = {split: read_split(beam_builder, split) for split in beam_builder.info.splits}
    assert beam_splits.keys() == local_splits.keys()
    for split, examples in local_splits.items():
        as_tuples = lambda exs: [(e['video_id'], int(e['frame_index']), e['image'].tobytes(),
                                  int(e['category']), list(e['categories'])) for e in exs]
        assert as_tuples(beam_splits[split]) == as_tuples(examples), split
        report = f'skipped_videos_{split}.json'
        assert json.loads((beam_builder.data_path / report).read_text()) == \
            json.loads((local_builder.data_path / report).read_text())


class CountingSource:
    """A prepared split that counts the records read."""

    def __init__(self, source):
        self.source, self.reads = source, 0
        self.dataset_info, self.split = source.dataset_info, source.split

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        self.reads += 1
        return self.source[i]


def test_frame_index_is_kept_on_disk_and_rebuilt_when_the_split_changes(built, tmp_path, caplog):
    builder, _ = built
    source = CountingSource(open_prepared(builder.data_dir, 'train'))
    n = len(source)
    expected = FrameTable.from_source(source.source)

    def same(table):
        return all(np.array_equal(getattr(table, f), getattr(expected, f))
                   for f in ('video_ids', 'frame_index', 'timestamp_s'))

    assert same(FrameTable.cached(source, tmp_path)) and source.reads == n
    assert same(FrameTable.cached(source, tmp_path)) and source.reads == n  # nothing read again
    (kept,) = (tmp_path / 'frame_index').glob('*.npz')

    shard = sorted(pathlib.Path(builder.data_dir).glob('*-train.array_record*'))[0]
    stat = shard.stat()
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))  # the split was rebuilt
    assert same(FrameTable.cached(source, tmp_path)) and source.reads == 2 * n
    assert len(list((tmp_path / 'frame_index').glob('*.npz'))) == 2

    newest = max((tmp_path / 'frame_index').glob('*.npz'), key=lambda p: p.stat().st_mtime_ns)
    newest.write_bytes(b'not an index')
    with caplog.at_level(logging.WARNING):
        assert same(FrameTable.cached(source, tmp_path)) and source.reads == 3 * n
    assert 'unreadable frame index' in caplog.text
    assert kept.exists() and not list((tmp_path / 'frame_index').glob('.*'))  # no temporaries

    in_memory = [{'video_id': b'v', 'frame_index': 0, 'timestamp_s': 0.0}]
    assert len(FrameTable.cached(in_memory, tmp_path / 'memory')) == 1  # nothing to key it on
    assert not (tmp_path / 'memory').exists()
