"""GenSurgery URL lists and video files -> YouTube video IDs, categories and a primary category.

The 27 released lists (`videos_to_download/<category>.txt` in the GSViT repository) mix
`https://youtu.be/<id>` and `https://www.youtube.com/watch?v=<id>` URLs, with CRLF line ends, blank
lines, `?si=` tracking parameters, duplicates within and across files and two truncated IDs.
Parsing never fails on a bad line: it is kept in `UrlLists.malformed` with its file and line number.

Primary category rule: a video's categories sorted by (is `unsorted`, is not a procedure, name),
first one wins. So a named procedure beats the non-procedure lists (IBS, colon_cancer,
colorectal_disease, davinci_instructions, video_atlas), which beat `unsorted`; ties go to the
name in `CATEGORIES` order (Python's `sorted`, so `IBS` sorts first).
"""
from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
import re
import urllib.parse
from typing import Iterable, Mapping

from etils import epath

# The released lists at the commit that added them; unchanged at the spec's snapshot 41336085
# (byte-identical, see checksums.tsv), whose full 40-hex SHA was not available offline.
LISTS_COMMIT = '6cc153bf48413017f7e300e6b3734f8433d657fc'
LISTS_BASE_URL = ('https://raw.githubusercontent.com/SamuelSchmidgall/GSViT/'
                  f'{LISTS_COMMIT}/videos_to_download/')

# File stems of the 27 lists, original spelling kept (cholestectomy, cardiomytomy), `sorted` order.
CATEGORIES: tuple[str, ...] = (
    'IBS', 'anal_surgery', 'appendectomy', 'cardiomytomy', 'cholestectomy', 'colectomy',
    'colon_cancer', 'colorectal_disease', 'davinci_instructions', 'esophagectomy',
    'fundoplication', 'gastrectomy', 'gastrojejunostomy', 'heller_myotomy', 'hemicolectomy',
    'hernia', 'ladds_procedure', 'liver_resection', 'rectal_cancer', 'rectal_prolapse',
    'rectopexy', 'robotic_chole', 'sigmoidectomy', 'splenectomy', 'superior_mesenteric_artery',
    'unsorted', 'video_atlas',
)
UNSORTED = 'unsorted'
NON_PROCEDURES = frozenset({'IBS', 'colon_cancer', 'colorectal_disease', 'davinci_instructions',
                            'video_atlas', UNSORTED})
URLS: dict[str, str] = {name: f'{LISTS_BASE_URL}{name}.txt' for name in CATEGORIES}

VIDEO_EXTENSIONS = ('.mp4', '.webm', '.mkv', '.mov', '.avi')

_ID = re.compile(r'[A-Za-z0-9_-]{11}')
_YOUTUBE_HOSTS = ('youtube.com', 'youtube-nocookie.com')
_PATH_FORMS = ('shorts', 'embed', 'live', 'v', 'e')  # youtube.com/<form>/<id>
# Names a video file can have, tried in order: `watch?v=<id>...` (original downloader; `?` may be
# stored as `#` or yt-dlp's full-width `？`), `... [<id>].<ext>` (yt-dlp's default template),
# `<id>.<anything>` (this project, and the original downloader's youtu.be names).
_FILE_PATTERNS = (
    re.compile(r'watch[?#？_]v=([A-Za-z0-9_-]{11})(?![A-Za-z0-9_-])'),
    re.compile(r'\[([A-Za-z0-9_-]{11})\]'),
    re.compile(r'^([A-Za-z0-9_-]{11})(?:\.|$)'),
)


def primary_category(categories: Iterable[str]) -> str:
    """The one category an example is labelled with (rule in the module docstring)."""
    return min(categories, key=lambda c: (c == UNSORTED, c in NON_PROCEDURES, c))


def url_form(url: str) -> str:
    """How a line names its video: 'youtu.be', 'watch', 'shorts', 'embed', ..., 'bare', 'other'."""
    if _ID.fullmatch(url):
        return 'bare'
    parts = _split(url)
    host = _bare_host(parts.hostname or '')
    if host == 'youtu.be':
        return 'youtu.be'
    if host in _YOUTUBE_HOSTS:
        segments = [s for s in parts.path.split('/') if s]
        if segments[:1] == ['watch']:
            return 'watch'
        if segments and segments[0] in _PATH_FORMS:
            return segments[0]
    return 'other'


def video_id(url: str) -> str:
    """The 11-character video ID in a YouTube URL (or a bare ID); ValueError says what is wrong."""
    url = url.strip()
    form = url_form(url)
    if form == 'bare':
        return url
    parts = _split(url)
    segments = [s for s in parts.path.split('/') if s]
    if form == 'youtu.be':
        candidate = segments[0] if segments else ''
    elif form == 'watch':
        candidate = urllib.parse.parse_qs(parts.query).get('v', [''])[0]
    elif form != 'other':
        candidate = segments[1] if len(segments) > 1 else ''
    else:
        raise ValueError('not a YouTube video URL')
    if not _ID.fullmatch(candidate):
        raise ValueError(f'video ID {candidate!r} has {len(candidate)} characters, '
                         'expected 11 of [A-Za-z0-9_-]')
    return candidate


def video_id_from_filename(name: str) -> str | None:
    """The video ID in a downloaded file's name (any naming in `_FILE_PATTERNS`), else None."""
    for pattern in _FILE_PATTERNS:
        match = pattern.search(name)
        if match:
            return match.group(1)
    return None


@dataclasses.dataclass(frozen=True)
class LineRef:
    """A list line that names no valid video: `category`.txt line `line` (1-based)."""

    category: str
    line: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f'{self.category}:{self.line}'


@dataclasses.dataclass
class UrlLists:
    """What the lists say: video ID -> its categories (sorted), malformed lines, line counts."""

    categories: dict[str, tuple[str, ...]]
    malformed: list[LineRef]
    num_lines: int  # non-empty lines
    url_forms: collections.Counter  # url_form() -> lines

    @property
    def ids(self) -> list[str]:
        return sorted(self.categories)

    @property
    def category_names(self) -> set[str]:
        return {c for cats in self.categories.values() for c in cats}

    def primary(self, video: str) -> str:
        return primary_category(self.categories[video])

    def summary(self) -> str:
        forms = ', '.join(f'{n} {form}' for form, n in sorted(self.url_forms.items()))
        bad = ', '.join(map(str, self.malformed)) or 'none'
        return (f'{self.num_lines} URL lines ({forms}) -> {len(self.categories)} unique video IDs; '
                f'{len(self.malformed)} malformed line(s): {bad}')


def parse_lists(texts: Mapping[str, str]) -> UrlLists:
    """Parse list contents keyed by category (file stem)."""
    categories: dict[str, set[str]] = collections.defaultdict(set)
    malformed, forms, num_lines = [], collections.Counter(), 0
    for category, text in sorted(texts.items()):
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line:
                continue
            num_lines += 1
            forms[url_form(line)] += 1
            try:
                categories[video_id(line)].add(category)
            except ValueError as e:
                malformed.append(LineRef(category, number, line, str(e)))
    return UrlLists({v: tuple(sorted(c)) for v, c in categories.items()}, malformed, num_lines,
                    forms)


def read_lists(paths: Mapping[str, os.PathLike | str]) -> UrlLists:
    """Parse list files keyed by category (e.g. what `dl_manager.download(URLS)` returns)."""
    return parse_lists({category: epath.Path(path).read_bytes().decode('utf-8-sig')
                        for category, path in paths.items()})


def read_list_dir(directory: os.PathLike | str) -> UrlLists:
    """Parse every `<category>.txt` in a directory."""
    return read_lists({p.stem: p for p in epath.Path(directory).glob('*.txt')})


def find_videos(directory: os.PathLike | str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Video files under `directory` (recursively) by ID -> relative path, and the duplicates.

    When several files carry one ID, the first relative path in sorted order is used and all of
    them are returned in the duplicates dict. Partial downloads (`.part`, `.ytdl`) never match.
    """
    directory = pathlib.Path(directory)
    by_id: dict[str, list[str]] = collections.defaultdict(list)
    for path in sorted(directory.rglob('*')):
        if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
            found = video_id_from_filename(path.name)
            if found:
                by_id[found].append(path.relative_to(directory).as_posix())
    chosen = {v: paths[0] for v, paths in by_id.items()}
    duplicates = {v: paths for v, paths in by_id.items() if len(paths) > 1}
    return chosen, duplicates


def _split(url: str) -> urllib.parse.SplitResult:
    return urllib.parse.urlsplit(url if '://' in url else f'https://{url}')


def _bare_host(host: str) -> str:
    for prefix in ('www.', 'm.', 'music.'):
        host = host.removeprefix(prefix)
    return host
