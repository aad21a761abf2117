"""`gsvit-embed`: per-video files (latents, times, frame indices) equal to the encoder on the same
frames, sampling identical to `sample_at_fps` (B-frames skipped while decoding), every-frame and
pooled output, image folders, TFDS splits, unreadable videos skipped and listed, resuming after a
kill, refusing a folder of other weights, one-line user errors, and 2 processes sharing the work."""
import io
import json
import pathlib
import re
import shutil
import sys
import types
from fractions import Fraction

import jax
import numpy as np
import pytest
from PIL import Image

import gsvit_jax.api
import gsvit_jax.embed
from gsvit_jax.embed import cli, store
from gsvit_jax.embed.decode import read_video_file, resize
from gsvit_jax.embed.inputs import VideoFile, find_videos
from gsvit_jax.embed.run import assign_videos, embed
from gsvit_jax.errors import UserError
from multiprocess import launch
from tfds_builders.testing import index_frames, write_corrupt_video, write_video
from tfds_builders.video import iter_frames, sample_at_fps

IMG_SIZE = 96  # the tiny variant at 96 px: a 2x2 map, so latent (256) and pooled (64) differ
TINY = ['--variant', 'tiny', '--img-size', str(IMG_SIZE), '--batch-size', '8']
# the host-side resize rounds to uint8: error relative to the largest latent (measured 8e-4 in
# float32, 2.3e-3 stored as float16)
TOLERANCE = 1e-2


def decode_all(generator):
    """A reader's frames and the `Timeline` it returns."""
    frames = []
    while True:
        try:
            frames.append(next(generator))
        except StopIteration as end:
            return frames, end.value


def rgba(image: np.ndarray) -> np.ndarray:
    return np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])


def write_b_frame_video(path: pathlib.Path, frames: np.ndarray, fps: float) -> pathlib.Path:
    """H.264 with B-frames (x264's default 3, pyramid), as most recorded video is."""
    import av
    with av.open(str(path), mode='w') as container:
        stream = container.add_stream('libx264', rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt, stream.options = 'yuv420p', {'preset': 'fast', 'crf': '18'}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format='rgb24')):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def assert_close(latents: np.ndarray, expected: np.ndarray) -> None:
    assert latents.shape == expected.shape
    np.testing.assert_allclose(latents, expected, rtol=0,
                               atol=TOLERANCE * np.abs(expected).max())


@pytest.fixture(scope='module')
def encoder():
    return gsvit_jax.api.load_encoder(None, variant='tiny', img_size=IMG_SIZE, batch_size=8)


@pytest.fixture(scope='module')
def inputs(tmp_path_factory) -> pathlib.Path:
    """a.mp4 (3 s), sub/b.mp4 (2 s), 25 fps; stills/ (3 PNGs); bad.mp4 (random bytes)."""
    root = tmp_path_factory.mktemp('inputs')
    write_video(root / 'a.mp4', index_frames(75), fps=25)
    write_video(root / 'sub' / 'b.mp4', index_frames(50, start=100), fps=25)
    (root / 'stills').mkdir()
    for i, frame in enumerate(index_frames(3, start=200)):
        Image.fromarray(frame).save(root / 'stills' / f'frame{i:02d}.png')
    write_corrupt_video(root / 'bad.mp4')
    return root


@pytest.fixture(scope='module')
def embedded(inputs, encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp('embedded') / 'out'
    summary = embed([inputs], out, encoder, dtype='float32', progress=False)
    return out, summary


@pytest.fixture
def reuse_encoder(monkeypatch, encoder):
    """The command line gets the module's encoder, after checking what it asked for."""
    def load(weights, *, variant, img_size, batch_size):
        assert (weights, variant, img_size, batch_size) == (None, 'tiny', IMG_SIZE, 8)
        return encoder
    monkeypatch.setattr(gsvit_jax.api, 'load_encoder', load)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    try:
        status = cli.main([str(a) for a in argv])
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def snapshot(folder: pathlib.Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob('*')) if p.is_file()}


# ------------------------------------------------------------------------------------------------
# Decoding
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('shape', [(300, 200), (40, 70), (IMG_SIZE, IMG_SIZE)])
def test_resize_is_the_encoders_rounded_to_uint8(shape):
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), np.uint8)
    expected = jax.image.resize(image.astype(np.float32), (IMG_SIZE, IMG_SIZE, 3), 'bilinear',
                                antialias=False)
    got = resize(rgba(image), IMG_SIZE)
    assert got.shape == (IMG_SIZE, IMG_SIZE, 3) and got.dtype == np.uint8
    assert np.abs(got - np.asarray(expected)).max() <= 0.5 + 1e-2  # rounding (float32 sums)


@pytest.mark.parametrize('rate, fps', [(25, 1.0), (25, 2.5), (25, None), (30000 / 1001, 1.0)])
def test_sampling_equals_sample_at_fps_with_b_frames(tmp_path, rate, fps):
    """Frames nothing references are skipped while no sample is due; the frames kept, their
    times, indices (counting every frame) and pixels are those of a full decode."""
    path = write_b_frame_video(tmp_path / 'b.mp4', index_frames(100), rate)
    expected = list(iter_frames(path)) if fps is None else list(sample_at_fps(path, fps))
    frames, timeline = decode_all(read_video_file(VideoFile('b.mp4', str(path), 0, path), fps,
                                                  IMG_SIZE, threads=2))
    assert list(timeline.frame_indices) == [i for i, _, _ in expected]
    np.testing.assert_allclose(timeline.timestamps_s, [t for _, t, _ in expected], atol=1e-9)
    for got, (_, _, image) in zip(frames, expected, strict=True):
        np.testing.assert_array_equal(got, resize(rgba(image), IMG_SIZE))
    assert timeline.duration_s == pytest.approx(100 / rate)


# ------------------------------------------------------------------------------------------------
# The output folder
# ------------------------------------------------------------------------------------------------
def test_video_files_hold_latents_times_and_frame_indices(embedded, encoder, inputs):
    out, summary = embedded
    manifest = json.loads((out / 'manifest.json').read_text())
    assert {k: manifest[k] for k in ('format', 'fingerprint', 'weights', 'variant', 'img_size',
                                     'output', 'dtype', 'fps')} == {
        'format': 'gsvit-embed/1', 'fingerprint': encoder.fingerprint, 'weights': 'random',
        'variant': 'tiny', 'img_size': IMG_SIZE, 'output': 'latent', 'dtype': 'float32',
        'fps': 1.0}
    assert manifest['videos'] == {
        'a.mp4': {'file': 'a.mp4.npz', 'source': str(inputs / 'a.mp4'), 'frames': 3,
                  'duration_s': 3.0},
        'stills': {'file': 'stills.npz', 'source': str(inputs / 'stills'), 'frames': 3,
                   'duration_s': 3.0},
        'sub/b.mp4': {'file': 'sub/b.mp4.npz', 'source': str(inputs / 'sub' / 'b.mp4'),
                      'frames': 2, 'duration_s': 2.0}}
    assert not list(out.glob('manifest.process-*')) and not list(out.rglob('*.tmp'))
    assert sorted(summary.embedded) == ['a.mp4', 'stills', 'sub/b.mp4']
    with np.load(out / 'a.mp4.npz') as a:
        assert sorted(a.files) == ['fingerprint', 'frame_indices', 'latents', 'timestamps_s']
        assert a['latents'].shape == (3, 64 * 4) and a['latents'].dtype == np.float32
        assert a['timestamps_s'].dtype == np.float64 and a['frame_indices'].dtype == np.int64
        np.testing.assert_array_equal(a['timestamps_s'], [0.0, 1.0, 2.0])
        np.testing.assert_array_equal(a['frame_indices'], [0, 25, 50])
        assert a['fingerprint'].shape == () and str(a['fingerprint']) == encoder.fingerprint
        # the same frames, decoded independently, at full size through the encoder
        frames = np.stack([image for index, _, image in iter_frames(inputs / 'a.mp4')
                           if index in (0, 25, 50)])
        assert_close(a['latents'], encoder.latent(frames))
    with np.load(out / 'sub' / 'b.mp4.npz') as b:
        np.testing.assert_array_equal(b['frame_indices'], [0, 25])


def test_image_folder_is_one_video_in_file_name_order(embedded, encoder, inputs):
    out, _ = embedded
    with np.load(out / 'stills.npz') as stills:
        assert list(stills['names']) == ['frame00.png', 'frame01.png', 'frame02.png']
        np.testing.assert_array_equal(stills['timestamps_s'], [0.0, 1.0, 2.0])
        np.testing.assert_array_equal(stills['frame_indices'], [0, 1, 2])
        images = np.stack([np.asarray(Image.open(inputs / 'stills' / name))
                           for name in stills['names']])
        assert_close(stills['latents'], encoder.latent(images))


def test_unreadable_video_is_skipped_and_listed(embedded, inputs):
    out, summary = embedded
    manifest = json.loads((out / 'manifest.json').read_text())
    assert [s['source'] for s in manifest['skipped']] == [str(inputs / 'bad.mp4')]
    assert 'cannot open' in manifest['skipped'][0]['reason']
    assert not (out / 'bad.mp4.npz').exists()
    assert summary.skipped == tuple(manifest['skipped'])
    assert f'1 skipped -> {out}; skipped: {inputs / "bad.mp4"} (cannot open' in summary.line()


def test_every_frame_pooled_float16(inputs, encoder, tmp_path):
    summary = embed([inputs / 'a.mp4'], tmp_path / 'out', encoder, fps=None, output='pooled',
                    progress=False)
    assert summary.embedded == ('a.mp4',) and summary.frames == 75
    manifest = json.loads((tmp_path / 'out' / 'manifest.json').read_text())
    assert manifest['fps'] is None and manifest['output'] == 'pooled'
    with np.load(tmp_path / 'out' / 'a.mp4.npz') as a:
        assert a['latents'].shape == (75, 64) and a['latents'].dtype == np.float16
        np.testing.assert_array_equal(a['frame_indices'], np.arange(75))
        np.testing.assert_allclose(a['timestamps_s'], np.arange(75) / 25, atol=1e-9)
        frames = np.stack([image for _, _, image in iter_frames(inputs / 'a.mp4')])
        # pooled = the channel-major latent averaged over the 2x2 positions
        expected = encoder.latent(frames).reshape(75, 64, 4).mean(-1)
        assert_close(a['latents'].astype(np.float32), expected)


def test_tfds_split_videos_grouped_and_in_time_order(tmp_path, encoder):
    import tensorflow_datasets as tfds

    from gsvit_jax.data.frames import open_frames
    from tfds_builders.cholec80 import fake_data
    from tfds_builders.cholec80.cholec80_dataset_builder import Builder, Cholec80Config
    manual = fake_data.make_manual_dir(tmp_path / 'manual', [41, 42], {41: 60, 42: 30})
    config = Cholec80Config(name='embed_test', description='generated',
                            splits={'test': [41, 42]}, image_size=(64, 96))
    builder = Builder(config=config, data_dir=str(tmp_path / 'tfds'), file_format='array_record')
    builder.num_workers = 1
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    spec = 'tfds:cholec80/embed_test/test'
    summary = embed([spec], tmp_path / 'out', encoder, data_dir=str(tmp_path / 'tfds'),
                    dtype='float32', progress=False)
    assert sorted(summary.embedded) == ['video41', 'video42']
    manifest = json.loads((tmp_path / 'out' / 'manifest.json').read_text())
    assert manifest['videos']['video41'] == {'file': 'video41.npz', 'source': f'{spec}#video41',
                                             'frames': 3, 'duration_s': 3.0}
    records = open_frames('cholec80/embed_test', 'test', str(tmp_path / 'tfds'))
    by_index = {int(r['frame_index']): r['image'] for r in
                (records[i] for i in range(len(records))) if r['video_id'] == b'video41'}
    with np.load(tmp_path / 'out' / 'video41.npz') as video:
        np.testing.assert_array_equal(video['frame_indices'], [0, 25, 50])
        np.testing.assert_array_equal(video['timestamps_s'], [0.0, 1.0, 2.0])
        images = np.stack([np.asarray(Image.open(io.BytesIO(by_index[i])))
                           for i in (0, 25, 50)])
        assert_close(video['latents'], encoder.latent(images))
    with np.load(tmp_path / 'out' / 'video42.npz') as video:
        np.testing.assert_array_equal(video['frame_indices'], [0, 25])


# ------------------------------------------------------------------------------------------------
# Resuming
# ------------------------------------------------------------------------------------------------
def test_rerun_after_a_kill_keeps_finished_videos_and_redoes_the_partial_one(
        inputs, encoder, tmp_path, monkeypatch):
    out = tmp_path / 'out'
    written = []

    def killed_on_second_video(path, write):
        if path.suffix == '.npz' and written:
            raise KeyboardInterrupt  # the run dies while writing its second video
        written.append(path)
        return real_write(path, write)

    real_write = store.write_atomic
    monkeypatch.setattr(store, 'write_atomic', killed_on_second_video)
    with pytest.raises(KeyboardInterrupt):
        embed([inputs], out, encoder, progress=False, workers=1)
    monkeypatch.undo()
    (first,) = [p for p in written if p.suffix == '.npz']
    assert not (out / 'manifest.json').read_text().count('.npz')  # listed in the part only
    assert (out / 'manifest.process-0.json').is_file()
    unfinished = [n for n in ('a.mp4', 'stills', 'sub/b.mp4') if out / f'{n}.npz' != first]
    leftovers = [(out / n).with_name(f'.{pathlib.Path(n).name}.npz.x1y2z3.tmp')
                 for n in unfinished]  # what a kill in the middle of write_atomic leaves
    for leftover in leftovers:
        leftover.parent.mkdir(parents=True, exist_ok=True)
        leftover.write_bytes(b'half a file')
    mtime = first.stat().st_mtime_ns

    summary = embed([inputs], out, encoder, progress=False)
    assert summary.already_done == 1 and len(summary.embedded) == 2
    assert first.stat().st_mtime_ns == mtime  # not encoded again
    assert not any(p.exists() for p in leftovers) and not list(out.glob('manifest.process-*'))
    manifest = json.loads((out / 'manifest.json').read_text())
    assert sorted(manifest['videos']) == ['a.mp4', 'stills', 'sub/b.mp4']
    assert len(manifest['skipped']) == 1  # bad.mp4, tried again


# ------------------------------------------------------------------------------------------------
# The command line
# ------------------------------------------------------------------------------------------------
def test_command_line_embeds_and_resumes(capsys, reuse_encoder, inputs, tmp_path):
    status, out, err = run_cli(capsys, inputs / 'a.mp4', inputs / 'stills', '--out',
                               tmp_path / 'out', *TINY, '--output', 'pooled')
    assert status == 0
    assert re.fullmatch(r'gsvit-embed: 2 videos embedded \(6 frames in [0-9.]+ s\), 0 already '
                        rf'done, 0 skipped -> {re.escape(str(tmp_path / "out"))}', out.strip())
    assert 'RANDOM encoder' in err
    with np.load(tmp_path / 'out' / 'stills.npz') as stills:
        assert stills['latents'].shape == (3, 64) and stills['latents'].dtype == np.float16
    status, out, _ = run_cli(capsys, inputs / 'a.mp4', inputs / 'stills', '--out',
                             tmp_path / 'out', *TINY, '--output', 'pooled')
    assert status == 0 and '0 videos embedded (0 frames in' in out and '2 already done' in out


def test_folder_of_other_weights_is_refused_untouched(capsys, reuse_encoder, embedded, inputs,
                                                      tmp_path):
    folder = tmp_path / 'other'
    shutil.copytree(embedded[0], folder)
    manifest = json.loads((folder / 'manifest.json').read_text())
    manifest['fingerprint'] = '0123456789abcdef'  # as if made by other weights
    (folder / 'manifest.json').write_text(json.dumps(manifest))
    before = snapshot(folder)
    status, out, err = run_cli(capsys, inputs, '--out', folder, *TINY, '--dtype', 'float32')
    assert status == 2 and 'Traceback' not in err
    (line,) = [l for l in err.splitlines() if 'error' in l]
    assert line.startswith(f'gsvit-embed: error: {folder} holds latents made with other settings '
                           '(weights fingerprint 0123456789abcdef, not ')
    assert err.splitlines()[-1] == line and snapshot(folder) == before


@pytest.mark.parametrize('make_argv, message', [
    (lambda t: [t / 'nothing_here.mp4', '--out', t / 'out'], 'nothing_here.mp4: no such file'),
    (lambda t: [t / 'empty', '--out', t / 'out'], 'no videos or images found'),
    (lambda t: [t / 'v.mp4', '--out', t / 'out', '--fps', '0'], 'fps must be a positive'),
    (lambda t: [t / 'v.mp4', '--out', t / 'out', '--fps', 'abc'], "invalid float value: 'abc'"),
    (lambda t: [t / 'v.mp4', '--out', t / 'out', '--fps', '2', '--every-frame'],
     'not allowed with argument'),
    (lambda t: [t / 'v.mp4', '--out', t / 'out', '--weights', t / 'GSViT.pkl'],
     'GSViT.pkl: no such file'),
    (lambda t: [t / 'v.mp4', '--out', t / 'made'], 'other settings (fps 2.0, not 1.0)'),
    (lambda t: ['tfds:cholec80_missing/test', '--out', t / 'out', '--data-dir', t],
     'tfds:cholec80_missing/test: no prepared split'),
], ids=['missing', 'empty', 'fps0', 'fps-text', 'fps-and-every-frame', 'weights', 'mismatch',
        'tfds'])
def test_user_errors_are_one_line_before_loading_the_model(capsys, no_encoder, tmp_path,
                                                           make_argv, message):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'notes.txt').write_text('no video')
    (tmp_path / 'v.mp4').write_bytes(b'')
    (tmp_path / 'made').mkdir()
    header = store.Settings('0123456789abcdef', 'random', 'tiny', IMG_SIZE, 'latent', 'float16',
                            2.0).header()
    (tmp_path / 'made' / 'manifest.json').write_text(json.dumps(header))
    status, out, err = run_cli(capsys, *make_argv(tmp_path), *TINY)
    assert status == 2
    assert err.count('\n') == 1 and err.startswith('gsvit-embed: error: ') and message in err
    assert not (tmp_path / 'out').exists()


def test_search_is_handed_to_the_search_command(monkeypatch):
    calls = []
    fake = types.SimpleNamespace(main=lambda argv: calls.append(argv) or 7)
    monkeypatch.setitem(sys.modules, 'gsvit_jax.embed.search', fake)
    monkeypatch.setattr(gsvit_jax.embed, 'search', fake, raising=False)
    assert cli.main(['search', '--index', 'x', '--query', 'y']) == 7
    assert calls == [['--index', 'x', '--query', 'y']]


def test_names_are_paths_under_their_input_and_must_be_unique(inputs, tmp_path):
    assert [v.name for v in find_videos([inputs])] == ['a.mp4', 'bad.mp4', 'stills', 'sub/b.mp4']
    assert [v.name for v in find_videos([inputs / 'stills', inputs / 'sub' / 'b.mp4'])] == [
        'b.mp4', 'stills']
    assert len(find_videos([inputs / 'a.mp4', inputs])) == 4  # a.mp4 given twice
    shutil.copy(inputs / 'a.mp4', tmp_path / 'a.mp4')
    with pytest.raises(UserError, match='both be written as a.mp4.npz'):
        find_videos([inputs, tmp_path / 'a.mp4'])


# ------------------------------------------------------------------------------------------------
# Several processes
# ------------------------------------------------------------------------------------------------
def test_two_processes_split_the_videos_and_complete_the_manifest(tmp_path):
    folder = tmp_path / 'videos'
    seconds = {f'v{i}.mp4': i + 1 for i in range(4)}
    for i, (name, length) in enumerate(seconds.items()):
        write_video(folder / name, index_frames(25 * length, start=i), fps=25)
    videos = find_videos([folder])
    owner = assign_videos(videos, 2)
    assert sorted(owner.values()) == [0, 0, 1, 1]
    out = tmp_path / 'out'
    run = launch(['-m', 'gsvit_jax.embed', str(folder), '--out', str(out), *TINY],
                 tmp_path / 'logs')  # appends the --config.distributed.* flags
    run.check(timeout=240)
    for index in (0, 1):
        frames = sum(seconds[name] for name in owner if owner[name] == index)
        assert (f'gsvit-embed: process {index}/2: 2 videos embedded ({frames} frames in'
                in run.log(index)), run.log(index)
    manifest = json.loads((out / 'manifest.json').read_text())
    assert {name: entry['frames'] for name, entry in manifest['videos'].items()} == seconds
    assert manifest['skipped'] == [] and not list(out.glob('manifest.process-*'))
    assert len(list(out.glob('*.npz'))) == 4
