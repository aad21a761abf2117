"""`gsvit-embed search`: query specs and times, exact blocked cosine top-k against brute force,
similar moments found in an index of generated videos (embedded here with a tiny random encoder,
in the index format gsvit-embed writes), the picture, and the one-line user errors."""
import json
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

import gsvit_jax.api
from gsvit_jax.embed import match_picture, search
from gsvit_jax.embed.nearest import Match, embed, open_index, top_k_cosine
from gsvit_jax.embed.query import format_time, frame_at, parse_time, read_query
from gsvit_jax.errors import UserError
from tfds_builders.testing import write_video
from tfds_builders.video import iter_frames

FPS = 5  # every frame is indexed: a sample period of 0.2 s
SECONDS = 6
HEIGHT, WIDTH = 64, 96
PALETTE = np.array([(200, 40, 40), (40, 180, 60), (50, 70, 210), (220, 200, 40), (150, 60, 190),
                    (40, 190, 200)], np.uint8)


def segment_frames(seed: int) -> np.ndarray:
    """(FPS * SECONDS, H, W, 3): a colour per one-second segment (in a per-video order) and a
    white square that moves every frame, so no two frames look alike."""
    order = np.random.default_rng(seed).permutation(len(PALETTE))
    frames = np.empty((FPS * SECONDS, HEIGHT, WIDTH, 3), np.uint8)
    for i, frame in enumerate(frames):
        frame[:] = PALETTE[order[i // FPS % len(order)]]
        y, x = (5 * i + 7 * seed) % (HEIGHT - 16), (11 * i + 3 * seed) % (WIDTH - 16)
        frame[y:y + 16, x:x + 16] = 255
    return frames


def write_index(root: pathlib.Path, encoder, videos: dict[str, pathlib.Path],
                folders: dict[str, pathlib.Path]) -> pathlib.Path:
    """An index as gsvit-embed writes it: every frame of the videos, every image of the
    folders, float16 latents."""
    entries = {}
    for rel, source in {**videos, **folders}.items():
        if rel in videos:
            decoded = list(iter_frames(source))
            names = None
        else:
            names = sorted(p.name for p in source.iterdir())
            decoded = [(i, i / FPS, np.asarray(Image.open(source / name).convert('RGB')))
                       for i, name in enumerate(names)]
        latents = encoder.latent(np.stack([f for _, _, f in decoded]))
        arrays = {'latents': latents.astype(np.float16),
                  'timestamps_s': np.array([t for _, t, _ in decoded], np.float64),
                  'frame_indices': np.array([i for i, _, _ in decoded], np.int64),
                  'fingerprint': np.array(encoder.fingerprint)}
        if names is not None:
            arrays['names'] = np.array(names)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        np.savez(root / f'{rel}.npz', **arrays)
        entries[rel] = {'file': f'{rel}.npz', 'source': str(source.resolve()),
                        'frames': len(decoded), 'duration_s': decoded[-1][1]}
    manifest = {'format': 'gsvit-embed/1', 'fingerprint': encoder.fingerprint, 'weights': 'random',
                'variant': 'tiny', 'img_size': 64, 'output': 'latent', 'dtype': 'float16',
                'fps': None, 'videos': entries, 'skipped': []}
    (root / 'manifest.json').write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope='module')
def encoder():
    return gsvit_jax.api.load_encoder(None, variant='tiny', img_size=64, batch_size=8)


@pytest.fixture(scope='module')
def videos(tmp_path_factory) -> dict[str, pathlib.Path]:
    folder = tmp_path_factory.mktemp('videos')
    return {rel: write_video(folder / rel, segment_frames(seed), fps=FPS)
            for seed, rel in enumerate(['a.mp4', 'b.mp4', 'clips/c.mp4'])}


@pytest.fixture(scope='module')
def stills(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp('stills')
    for i in (3, 17):
        Image.fromarray(segment_frames(7)[i]).save(folder / f'still{i:02d}.png')
    return folder


@pytest.fixture(scope='module')
def index_dir(tmp_path_factory, encoder, videos, stills) -> pathlib.Path:
    return write_index(tmp_path_factory.mktemp('index'), encoder, videos, {'stills': stills})


@pytest.fixture
def reuse_encoder(monkeypatch, encoder):
    """The command line gets the module's encoder (a fresh random init costs ~15 s of compile),
    after checking it asked for the index's encoder."""
    def load(weights, *, variant, img_size, seed):
        assert (weights, variant, img_size, seed) == (None, 'tiny', 64, 0)
        return encoder
    monkeypatch.setattr(gsvit_jax.api, 'load_encoder', load)


def copy_index(index_dir: pathlib.Path, destination: pathlib.Path, **manifest_changes):
    shutil.copytree(index_dir, destination)
    manifest = json.loads((destination / 'manifest.json').read_text())
    (destination / 'manifest.json').write_text(json.dumps({**manifest, **manifest_changes}))
    return destination


def set_npz_fingerprint(path: pathlib.Path, fingerprint: str) -> None:
    with np.load(path) as npz:
        arrays = dict(npz)
    np.savez(path, **{**arrays, 'fingerprint': np.array(fingerprint)})


def run_search(*argv: str) -> int:
    return search.main([str(a) for a in argv])


# ------------------------------------------------------------------------------------------------
# Times and query specs
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('text, seconds', [('93', 93.0), ('93s', 93.0), ('93.5', 93.5),
                                           ('1:33', 93.0), ('1:01:33.5', 3693.5), ('0', 0.0)])
def test_parse_time(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize('text', ['', 'abc', '-3', '1:75', '1:60:00', '93m', '1::3'])
def test_bad_times_are_user_errors(text):
    with pytest.raises(UserError, match='bad time'):
        parse_time(text)


def test_format_time():
    assert format_time(93.04) == '0:01:33.0'
    assert format_time(3693.5) == '1:01:33.5'
    assert format_time(59.96) == '0:01:00.0'


def test_frame_at_seeks_to_the_first_frame_at_or_after_the_time(videos):
    decoded = {round(t, 3): image for _, t, image in iter_frames(videos['b.mp4'])}
    for wanted, expected in [(0.0, 0.0), (2.0, 2.0), (4.05, 4.0), (4.15, 4.2), (5.8, 5.8)]:
        image, time = frame_at(videos['b.mp4'], wanted)
        assert time == pytest.approx(expected, abs=1e-3)
        np.testing.assert_array_equal(image, decoded[round(time, 3)])


# ------------------------------------------------------------------------------------------------
# Blocked exact search
# ------------------------------------------------------------------------------------------------
def brute_force(rows: np.ndarray, query: np.ndarray, k: int, excluded=()) -> tuple:
    rows = rows.astype(np.float64)
    sims = rows @ query / np.maximum(np.linalg.norm(rows, axis=1) * np.linalg.norm(query), 1e-30)
    sims[list(excluded)] = -np.inf
    sims[np.isnan(sims)] = -np.inf
    order = np.lexsort((np.arange(len(rows)), -sims))[:k]
    order = order[np.isfinite(sims[order])]
    return sims[order], order


@pytest.mark.parametrize('dtype', [np.float32, np.float16])
@pytest.mark.parametrize('k', [1, 5, 40])
def test_blocked_search_equals_brute_force(dtype, k):
    rng = np.random.default_rng(k)
    data = rng.normal(size=(1000, 48)).astype(dtype)
    data[10] = 0  # a zero row scores 0 instead of dividing by zero
    data[20, 3] = np.nan  # skipped
    query = rng.normal(size=48).astype(np.float32)
    pieces = np.split(data, [137, 137, 537])  # uneven videos, one of them empty
    excluded = np.sort(rng.choice(1000, 60, replace=False))
    for block_rows in (1, 3, 7, 64, 333, 1000, 4096):
        for skip in ((), excluded):
            sims, rows = top_k_cosine(query, pieces, k, block_rows, np.asarray(skip, np.int64))
            expected_sims, expected_rows = brute_force(data, query, k, skip)
            np.testing.assert_array_equal(rows, expected_rows, err_msg=f'block {block_rows}')
            np.testing.assert_allclose(sims, expected_sims, atol=1e-5)


def test_fewer_rows_than_k_returns_them_all():
    sims, rows = top_k_cosine(np.ones(4), [np.eye(4)[:3]], k=10, block_rows=2)
    assert rows.tolist() == [0, 1, 2] and np.allclose(sims, 0.5)


# ------------------------------------------------------------------------------------------------
# Similar moments in an index
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('video, when, seconds', [('b.mp4', '2', 2.0), ('a.mp4', '4.05s', 4.05),
                                                  ('clips/c.mp4', '0:03.4', 3.4)])
def test_video_query_finds_its_own_moment(index_dir, encoder, videos, video, when, seconds):
    index = open_index(index_dir)
    query = read_query(f'{videos[video]}@t={when}')
    matches = index.search(embed(encoder, 'latent', query.frame), k=3)
    assert matches[0].video == video
    assert matches[0].time_s == pytest.approx(seconds, abs=0.5 / FPS)
    assert matches[0].similarity >= 0.999
    assert matches[1].similarity < matches[0].similarity
    assert matches[0].frame_index == round(matches[0].time_s * FPS)


def test_png_query_finds_its_frame(index_dir, encoder, videos, tmp_path):
    index, time, image = list(iter_frames(videos['clips/c.mp4']))[17]
    Image.fromarray(image).save(tmp_path / 'frame.png')
    query = read_query(str(tmp_path / 'frame.png'))
    best = open_index(index_dir).search(embed(encoder, 'latent', query.frame), k=1)[0]
    assert (best.video, best.frame_index, best.time_s) == ('clips/c.mp4', index, time)
    assert best.similarity >= 0.999


def test_image_folder_matches_name_their_image(index_dir, encoder, stills):
    query = read_query(str(stills / 'still17.png'))
    best = open_index(index_dir).search(embed(encoder, 'latent', query.frame), k=1)[0]
    assert best.label == 'stills/still17.png' and best.similarity >= 0.999


def test_cli_prints_the_table_and_draws_the_picture(index_dir, videos, tmp_path, capsys,
                                                    reuse_encoder):
    assert run_search('--index', index_dir, '--query', f'{videos["a.mp4"]}@t=2', '-k', 3,
                      '--out', tmp_path) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f'query: {videos["a.mp4"]} at 0:00:02.0'
    assert lines[1].split() == ['rank', 'video', 'time', 'similarity']
    rank, video, time, similarity = lines[2].split()
    assert (rank, video, time) == ('1', 'a.mp4', '0:00:02.0') and float(similarity) >= 0.999
    assert len(lines) == 2 + 3 + 1 and lines[-1] == f'picture: {tmp_path / "search_a.png"}'
    cell_w, cell_h = match_picture.cell_size()
    margin = match_picture.MARGIN
    with Image.open(tmp_path / 'search_a.png') as picture:  # 1 + 3 tiles in a row
        assert picture.size == (margin + 4 * (cell_w + margin), 2 * margin + cell_h)


def test_exclude_source_window_drops_the_query_neighbourhood(index_dir, videos, tmp_path, capsys,
                                                             reuse_encoder, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the picture goes to the current folder by default
    query = f'{videos["b.mp4"]}@t=3'
    run_search('--index', index_dir, '--query', query, '-k', 8, '--json')
    kept = json.loads(capsys.readouterr().out)
    run_search('--index', index_dir, '--query', query, '-k', 8, '--json',
               '--exclude-source-window', 1)
    dropped = json.loads(capsys.readouterr().out)
    assert kept['matches'][0]['video'] == 'b.mp4'
    assert kept['matches'][0]['time_s'] == pytest.approx(3.0)
    assert kept['picture'] == dropped['picture'] == 'search_b.png'
    assert (tmp_path / 'search_b.png').is_file()
    assert len(dropped['matches']) == 8
    assert not [m for m in dropped['matches']
                if m['video'] == 'b.mp4' and abs(m['time_s'] - 3.0) <= 1.0]
    outside = [m for m in kept['matches'] if m['video'] != 'b.mp4' or abs(m['time_s'] - 3) > 1]
    assert dropped['matches'][:len(outside)] == [{**m, 'rank': i} for i, m in
                                                 enumerate(outside, 1)]


def test_picture_grid_and_unreadable_sources(index_dir, videos, tmp_path):
    """1 + 7 tiles in rows of COLUMNS; a deleted video and a TFDS source give grey tiles."""
    copy_index(index_dir, tmp_path / 'index')
    gone = shutil.copy(videos['a.mp4'], tmp_path / 'gone.mp4')
    manifest = json.loads((tmp_path / 'index' / 'manifest.json').read_text())
    manifest['videos']['a.mp4']['source'] = str(gone)
    manifest['videos']['b.mp4']['source'] = 'tfds:gensurgery/train#b'
    (tmp_path / 'index' / 'manifest.json').write_text(json.dumps(manifest))
    pathlib.Path(gone).unlink()
    index = open_index(tmp_path / 'index')
    matches = [Match('clips/c.mp4', 1.0, 5, 0.99), Match('a.mp4', 2.0, 10, 0.98),
               Match('stills', 0.2, 1, 0.97, 'still17.png'), Match('b.mp4', 0.4, 2, 0.9),
               Match('clips/c.mp4', 5.8, 29, 0.8), Match('a.mp4', 0.0, 0, 0.7),
               Match('clips/c.mp4', 0.0, 0, 0.6)]
    query = read_query(f'{videos["clips/c.mp4"]}@t=1')
    picture = match_picture.search_picture(query, index, matches)
    cell_w, cell_h = match_picture.cell_size()
    margin, columns, tile = match_picture.MARGIN, match_picture.COLUMNS, match_picture.TILE
    assert picture.shape == (margin + 2 * (cell_h + margin),
                             margin + columns * (cell_w + margin), 3)
    for i, match in enumerate([None, *matches]):  # a frame's bottom-right corner: letterbox or grey
        row, col = divmod(i, columns)
        corner = picture[margin + row * (cell_h + margin) + tile - 3,
                         margin + col * (cell_w + margin) + tile - 3]
        unreadable = match is not None and match.video in ('a.mp4', 'b.mp4')
        assert tuple(corner) == ((160, 160, 160) if unreadable else (0, 0, 0)), (i, match)


# ------------------------------------------------------------------------------------------------
# User errors: one line, exit status 2, found before the encoder is loaded
# ------------------------------------------------------------------------------------------------
def user_error_cases(index_dir, videos, tmp_path):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'broken.png').write_text('not an image')
    video = videos['a.mp4']
    moved = copy_index(index_dir, tmp_path / 'moved', weights=str(tmp_path / 'GSViT.pkl'))
    return [
        (['--index', tmp_path / 'nowhere', '--query', video], 'nowhere'),
        (['--index', tmp_path / 'empty', '--query', video], 'manifest.json'),
        (['--index', index_dir, '--query', f'{video}@t=1:2:3:4'], "'1:2:3:4'"),
        (['--index', index_dir, '--query', f'{video}@t=99'], 't=99s is beyond the end'),
        (['--index', index_dir, '--query', tmp_path / 'broken.png'], 'broken.png'),
        (['--index', index_dir, '--query', tmp_path / 'absent.png'], 'absent.png'),
        (['--index', index_dir, '--query', video, '-k', 0], '-k must be at least 1'),
        (['--index', index_dir, '--query', video, '--exclude-source-window', -1],
         '--exclude-source-window'),
        (['--index', index_dir, '--query', f'{video}@t=1', '--out', tmp_path / 'broken.png'],
         'broken.png is a file'),
        (['--index', moved, '--query', f'{video}@t=1'], f'no weights at {tmp_path / "GSViT.pkl"}'),
        (['--index', index_dir, '--query', video], 'a video query needs a time'),
    ]


def test_user_errors_are_one_line_before_the_encoder(index_dir, videos, tmp_path, capsys,
                                                     no_encoder):
    for argv, culprit in user_error_cases(index_dir, videos, tmp_path):
        with pytest.raises(SystemExit) as exit_info:
            run_search('--out', tmp_path, *argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, argv
        assert err.startswith('gsvit-embed search: error: ') and err.count('\n') == 1, err
        assert culprit in err and 'Traceback' not in err, (culprit, err)
    with pytest.raises(UserError, match='nowhere'):
        run_search('--index', tmp_path / 'nowhere', '--query', videos['a.mp4'], '--debug')


def test_index_mixing_encoders_is_refused(index_dir, videos, tmp_path, capsys, no_encoder):
    mixed = copy_index(index_dir, tmp_path / 'mixed')
    set_npz_fingerprint(mixed / 'b.mp4.npz', 'feedfacecafebeef')
    with pytest.raises(SystemExit) as exit_info:
        run_search('--index', mixed, '--query', f'{videos["a.mp4"]}@t=1')
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and 'b.mp4.npz' in err and 'feedfacecafebeef' in err


def test_other_encoder_than_the_index_is_refused(index_dir, encoder, videos, tmp_path, capsys,
                                                 reuse_encoder):
    other = copy_index(index_dir, tmp_path / 'other', fingerprint='feedfacecafebeef')
    for npz in other.rglob('*.npz'):
        set_npz_fingerprint(npz, 'feedfacecafebeef')
    with pytest.raises(SystemExit) as exit_info:
        run_search('--index', other, '--query', f'{videos["a.mp4"]}@t=1', '--out', tmp_path)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count('\n') == 1
    assert encoder.fingerprint in err and 'feedfacecafebeef' in err and '--weights' in err
