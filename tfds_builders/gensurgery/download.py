"""Download the GenSurgery videos with yt-dlp: each listed ID once, resumable, polite, logged.

    python -m tfds_builders.gensurgery.download --out DIR [--lists DIR] [--ids ID ...]
        [--sleep SECONDS] [--max-height 360] [--max-downloads N]

Saves `DIR/<id>.<ext>` (the video stream only, at most `--max-height` pixels high: frames are all
the builder uses, and no ffmpeg merge is needed) and appends one line per attempt to
`DIR/status.tsv`: id, status, reason, UTC timestamp. Status is `ok`, `unavailable` (private,
removed, terminated account, age-restricted, members-only, blocked: retrying will not help) or
`failed` (network, rate limiting, anything else: retried by the next run). A rerun skips IDs whose
file is present (any naming the builder accepts) or whose last status is `unavailable`.
Needs the `download` extra: `pip install -e ".[download]"`.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import logging
import os
import pathlib
import random
import re
import time
from typing import Callable, Iterable, Sequence

from gsvit_jax.errors import UserError, run_reporting_errors
from tfds_builders.gensurgery import url_lists

log = logging.getLogger(__name__)

OK, UNAVAILABLE, FAILED = 'ok', 'unavailable', 'failed'
STATUS_FILE = 'status.tsv'
_HEADER = '# id\tstatus\treason\ttimestamp_utc\n'

# yt-dlp / YouTube messages meaning the video cannot be had by retrying (lower case), in the
# order tried; everything else (network errors, HTTP 429, "confirm you're not a bot") is `failed`.
_UNAVAILABLE_MESSAGES = (
    ('private video', 'private'),
    ('video is private', 'private'),
    ('account associated with this video has been terminated', 'account terminated'),
    ('copyright', 'removed (copyright)'),
    ('has been removed', 'removed'),
    ('no longer available', 'removed'),
    ('confirm your age', 'age-restricted'),
    ('age-restricted', 'age-restricted'),
    ('inappropriate for some users', 'age-restricted'),
    ('members-only', 'members only'),
    ('join this channel', 'members only'),
    ('not made this video available in your country', 'blocked in this country'),
    ('not available in your country', 'blocked in this country'),
    ('video unavailable', 'unavailable'),
    ('this video is unavailable', 'unavailable'),
)

# (video_id, out_dir) -> the saved file; raises on failure with yt-dlp's message.
Fetch = Callable[[str, pathlib.Path], pathlib.Path]


def classify_error(message: str) -> tuple[str, str]:
    """(status, reason) for a download error message: `unavailable` if retrying cannot help."""
    lowered = message.lower()
    for needle, label in _UNAVAILABLE_MESSAGES:
        if needle in lowered:
            return UNAVAILABLE, f'{label}: {message}'
    return FAILED, message


def read_status(path: str | os.PathLike) -> dict[str, tuple[str, str, str]]:
    """id -> (status, reason, timestamp) of its last line; comment and cut-off lines are ignored."""
    path = pathlib.Path(path)
    entries: dict[str, tuple[str, str, str]] = {}
    if not path.exists():
        return entries
    for line in path.read_text(encoding='utf-8', errors='replace').splitlines():
        fields = line.split('\t')
        if line.startswith('#') or len(fields) != 4 or fields[1] not in (OK, UNAVAILABLE, FAILED):
            continue
        entries[fields[0]] = (fields[1], fields[2], fields[3])
    return entries


class StatusLog:
    """Append-only `status.tsv`; each line goes out in one `write` + fsync, so an interrupted run
    leaves at most one cut-off last line, which readers skip and the next run terminates."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self.entries = read_status(self.path)
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._write(_HEADER)
        elif not self.path.read_bytes().endswith(b'\n'):
            self._write('\n')

    def status(self, video_id: str) -> str | None:
        entry = self.entries.get(video_id)
        return entry[0] if entry else None

    def append(self, video_id: str, status: str, reason: str) -> None:
        reason = re.sub(r'\s+', ' ', reason).strip()[:300]
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')
        self._write(f'{video_id}\t{status}\t{reason}\t{stamp}\n')
        self.entries[video_id] = (status, reason, stamp)

    def _write(self, text: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text.encode('utf-8'))
            os.fsync(fd)
        finally:
            os.close(fd)


class YtDlpFetcher:
    """Fetch one video with yt-dlp as `<out_dir>/<id>.<ext>`, video stream only, <= max_height."""

    def __init__(self, max_height: int = 360):
        try:
            import yt_dlp
        except ImportError as e:
            raise ImportError('yt-dlp is not installed; install the download extra: '
                              'pip install -e ".[download]"  (or: pip install yt-dlp)') from e
        self._yt_dlp = yt_dlp
        self.max_height = max_height

    def __call__(self, video_id: str, out_dir: pathlib.Path) -> pathlib.Path:
        h = self.max_height
        params = {
            # smallest useful: a video-only stream (no merge, so no ffmpeg), mp4 preferred
            'format': f'bv*[height<={h}][ext=mp4]/bv*[height<={h}]/b[height<={h}]/wv*/w',
            'outtmpl': str(out_dir / '%(id)s.%(ext)s'),
            'noplaylist': True, 'quiet': True, 'no_warnings': True, 'noprogress': True,
            'retries': 3, 'fragment_retries': 3,
        }
        with self._yt_dlp.YoutubeDL(params) as ydl:
            info = ydl.extract_info(f'https://www.youtube.com/watch?v={video_id}', download=True)
            return pathlib.Path(ydl.prepare_filename(info))


def download_all(video_ids: Iterable[str], out_dir: str | os.PathLike, fetch: Fetch, *,
                 sleep_s: float = 5.0, max_downloads: int | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> collections.Counter:
    """Fetch every ID not yet present or known unavailable; returns counts by outcome.

    Waits `sleep_s` x U(0.5, 1.5) seconds between attempts and makes at most `max_downloads`.
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    status_log = StatusLog(out_dir / STATUS_FILE)
    present, _ = url_lists.find_videos(out_dir)
    rng = rng or random.Random()
    counts: collections.Counter = collections.Counter()
    attempts = 0
    for video_id in video_ids:
        if video_id in present:
            counts['present'] += 1
            continue
        if status_log.status(video_id) == UNAVAILABLE:
            counts['known unavailable'] += 1
            continue
        if max_downloads is not None and attempts >= max_downloads:
            counts['not attempted (--max-downloads)'] += 1
            continue
        if attempts:
            sleep(sleep_s * rng.uniform(0.5, 1.5))
        attempts += 1
        try:
            status, reason = OK, fetch(video_id, out_dir).name
        except Exception as e:  # noqa: BLE001 - yt-dlp raises many types; the message decides
            status, reason = classify_error(str(e) or type(e).__name__)
        status_log.append(video_id, status, reason)
        counts[status] += 1
        log.info('%s: %s (%s)', video_id, status, reason)
    return counts


def pinned_lists(download_dir: str | os.PathLike) -> url_lists.UrlLists:
    """The released lists, fetched (or reused) by TFDS's download manager, checksums verified."""
    import tensorflow_datasets as tfds

    from tfds_builders.gensurgery.gensurgery_dataset_builder import Builder
    manager = tfds.download.DownloadManager(download_dir=download_dir, url_infos=Builder.url_infos)
    return url_lists.read_lists(manager.download(url_lists.URLS))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    import tensorflow_datasets as tfds
    parser = argparse.ArgumentParser(prog='python -m tfds_builders.gensurgery.download',
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True, type=pathlib.Path,
                        help='manual dir to fill (pass it to the build as --manual_dir)')
    parser.add_argument('--lists', type=pathlib.Path,
                        help='directory of <category>.txt URL lists (default: the pinned release)')
    parser.add_argument('--download-dir', type=pathlib.Path,
                        default=pathlib.Path(tfds.core.constants.DATA_DIR) / 'downloads',
                        help='where TFDS keeps the downloaded URL lists (default: %(default)s)')
    parser.add_argument('--ids', nargs='+', metavar='ID',
                        help='only these video IDs (or URLs), e.g. to retry a few')
    parser.add_argument('--sleep', type=float, default=5.0,
                        help='mean seconds between downloads, jittered x0.5-1.5 (default: 5)')
    parser.add_argument('--max-height', type=int, default=360,
                        help='highest video stream to fetch, in pixels (default: 360)')
    parser.add_argument('--max-downloads', type=int,
                        help='stop after this many download attempts in this run')
    parser.add_argument('--debug', action='store_true',
                        help='show the traceback of an error (also GSVIT_JAX_DEBUG=1)')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, fetch: Fetch | None = None) -> collections.Counter:
    """The CLI; `fetch` replaces yt-dlp (tests)."""
    args = _parse_args(argv)
    return run_reporting_errors('python -m tfds_builders.gensurgery.download',
                                lambda: download(args, fetch), debug=args.debug)


def check_args(args: argparse.Namespace) -> None:
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f'--out {args.out}: is a file; expected a folder (new, or one to resume)')
    if args.lists is not None and not list(args.lists.glob('*.txt')):
        raise UserError(f'--lists {args.lists}: no <category>.txt URL lists in it'
                        + ('' if args.lists.is_dir() else ' (no such folder)'))
    for name in ('sleep', 'max_height', 'max_downloads'):
        value = getattr(args, name)
        if value is not None and (value < 0 or (value == 0 and name != 'sleep')):
            raise UserError(f'--{name.replace("_", "-")} {value}: expected a '
                            f'{"non-negative" if name == "sleep" else "positive"} number')


def download(args: argparse.Namespace, fetch: Fetch | None) -> collections.Counter:
    check_args(args)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
    if fetch is None:
        try:
            fetch = YtDlpFetcher(args.max_height)
        except ImportError as e:
            raise UserError(str(e)) from e
    lists = url_lists.read_list_dir(args.lists) if args.lists else pinned_lists(args.download_dir)
    log.info('URL lists: %s', lists.summary())
    ids = lists.ids
    if args.ids:
        ids = sorted({url_lists.video_id(i) for i in args.ids})
        unlisted = sorted(set(ids) - set(lists.categories))
        if unlisted:
            log.warning('not in the URL lists (downloaded anyway): %s', ' '.join(unlisted))
    counts = download_all(ids, args.out, fetch, sleep_s=args.sleep,
                          max_downloads=args.max_downloads)
    log.info('done: %s; status per ID in %s', dict(counts), args.out / STATUS_FILE)
    return counts


if __name__ == '__main__':
    main()
