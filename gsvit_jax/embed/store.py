"""The output folder of `gsvit-embed` (format `gsvit-embed/1`) and how a run resumes in it.

- `OUT/<name>.npz` per video: `latents` (N, D) float16/float32, `timestamps_s` float64 (N,),
  `frame_indices` int64 (N,), `fingerprint` (0-d str) and, for image folders, `names` (N,).
- `OUT/manifest.json`: the settings every latent was made with (encoder fingerprint, weights,
  variant, img_size, output, dtype, fps), `videos` {name: {file, source, frames, duration_s}}
  and `skipped` [{source, reason}], the videos of the last run that could not be read.

A folder holds latents of one setting only: a run with other settings is refused. Every file is
written atomically, a video's file before its listing, so a killed run leaves finished videos
listed and nothing half-written under a final name. While running, each process lists what it
finished in `manifest.process-<i>.json`; the first process merges those into the manifest at the
end (`merge`), and a rerun treats what they list as done.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any, Iterable, Sequence

import numpy as np

from gsvit_jax.atomic import write_atomic, write_text_atomic
from gsvit_jax.embed.decode import Timeline
from gsvit_jax.embed.inputs import Video
from gsvit_jax.errors import UserError

FORMAT = 'gsvit-embed/1'
MANIFEST = 'manifest.json'
OUTPUTS = ('latent', 'pooled')
DTYPES = ('float16', 'float32')


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the latents in a folder were made with; `fingerprint` None = not known yet (the
    encoder is not loaded), the rest is checked already."""

    fingerprint: str | None
    weights: str  # the weights' path, or 'random'
    variant: str
    img_size: int
    output: str  # 'latent' (C*h*w) or 'pooled' (C)
    dtype: str
    fps: float | None  # None: every frame

    def __post_init__(self):
        if self.output not in OUTPUTS:
            raise UserError(f'output must be one of {", ".join(OUTPUTS)}, got {self.output!r}')
        if self.dtype not in DTYPES:
            raise UserError(f'dtype must be one of {", ".join(DTYPES)}, got {self.dtype!r}')
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise UserError(f'fps must be a positive number of frames per second, got {self.fps}')

    def header(self) -> dict[str, Any]:
        """The manifest of a folder with no video yet."""
        return {'format': FORMAT, 'fingerprint': self.fingerprint, 'weights': self.weights,
                'variant': self.variant, 'img_size': self.img_size, 'output': self.output,
                'dtype': self.dtype, 'fps': self.fps, 'videos': {}, 'skipped': []}

    def differences(self, manifest: dict[str, Any]) -> list[str]:
        """The settings in which `manifest` differs from these, as 'what there, not here'."""
        out = []
        for key, label in (('fingerprint', 'weights fingerprint'),
                           ('variant', 'variant'), ('img_size', 'img_size'),
                           ('output', 'output'), ('dtype', 'dtype'), ('fps', 'fps')):
            mine, theirs = getattr(self, key), manifest.get(key)
            if key == 'fingerprint' and mine is None:
                continue
            if key == 'fps':
                mine, theirs = (None if v is None else float(v) for v in (mine, theirs))
            if mine != theirs:
                out.append(f'{label} {_show(theirs)}, not {_show(mine)}')
        return out


def _show(value: Any) -> str:
    return 'every frame' if value is None else str(value)


def read_manifest(out_dir: str | pathlib.Path) -> dict[str, Any] | None:
    """The folder's manifest; None when there is none; a `UserError` when it is not ours."""
    path = pathlib.Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f'{path} cannot be read ({e}): use another output folder') from e
    if not isinstance(manifest, dict) or manifest.get('format') != FORMAT:
        raise UserError(f'{path} is not a {FORMAT} manifest: use another output folder')
    return manifest


def _part_name(index: int) -> str:
    return f'manifest.process-{index}.json'


def _parts(out_dir: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out_dir.glob('manifest.process-*.json'))]


def check_folder(out_dir: str | pathlib.Path, settings: Settings,
                 videos: Sequence[Video]) -> dict[str, dict[str, Any]]:
    """Refuse (`UserError`, one line) an output folder made with other settings or holding
    another video under one of `videos`' names; returns the finished videos: name -> entry."""
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f'output folder {out_dir} is a file')
    manifest = read_manifest(out_dir)
    if manifest is None:
        return {}
    differences = settings.differences(manifest)
    if differences:
        raise UserError(f'{out_dir} holds latents made with other settings '
                        f'({"; ".join(differences)}): use another output folder or delete it')
    done = finished(out_dir, manifest)
    for video in videos:
        entry = done.get(video.name)
        if entry is not None and entry['source'] != video.source:
            raise UserError(f'{out_dir} already holds {video.name} from {entry["source"]}, not '
                            f'{video.source}: use another output folder')
    return done


def finished(out_dir: pathlib.Path, manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Videos listed in the manifest or a part manifest whose file is there: name -> entry."""
    entries = dict(manifest['videos'])
    for part in _parts(out_dir):
        entries.update(part['videos'])
    return {name: e for name, e in entries.items() if (out_dir / e['file']).is_file()}


def remove_partials(out_dir: pathlib.Path, names: Iterable[str]) -> None:
    """Delete what a killed run left of these videos' files: write_atomic's temporary files
    `.<file>.<random>.tmp` beside them."""
    by_folder: dict[pathlib.Path, set[str]] = {}
    for name in names:
        path = out_dir / f'{name}.npz'
        by_folder.setdefault(path.parent, set()).add(f'.{path.name}')
    for folder, stems in by_folder.items():
        if folder.is_dir():
            for path in folder.iterdir():
                if path.suffix == '.tmp' and path.stem.rpartition('.')[0] in stems:
                    path.unlink(missing_ok=True)


class Store:
    """One process's writer: video files, and its part manifest listing them."""

    def __init__(self, out_dir: str | pathlib.Path, settings: Settings, process_index: int = 0):
        self.out_dir = pathlib.Path(out_dir)
        self.settings = settings
        self._part_path = self.out_dir / _part_name(process_index)
        self._part = {'videos': {}, 'skipped': []}
        if self._part_path.is_file():  # a killed run's: its videos are done, its skips retried
            self._part['videos'] = json.loads(self._part_path.read_text())['videos']

    def begin(self) -> None:
        """Write the manifest of a new folder (one process), so its settings are known from the
        start and a rerun with other settings is refused even before anything finished."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if read_manifest(self.out_dir) is None:
            write_text_atomic(self.out_dir / MANIFEST, json.dumps(self.settings.header(), indent=1))

    def save(self, video: Video, latents: np.ndarray, timeline: Timeline) -> None:
        """Write `<name>.npz`, then list it in this process's part manifest."""
        arrays = {'latents': latents, 'timestamps_s': timeline.timestamps_s,
                  'frame_indices': timeline.frame_indices,
                  'fingerprint': np.array(self.settings.fingerprint)}
        if timeline.names is not None:
            arrays['names'] = timeline.names
        path = self.out_dir / f'{video.name}.npz'
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda f: np.savez(f, **arrays))
        self._part['videos'][video.name] = {'file': f'{video.name}.npz', 'source': video.source,
                                            'frames': int(len(latents)),
                                            'duration_s': round(float(timeline.duration_s), 6)}
        self._write_part()

    def skip(self, video: Video, reason: str) -> None:
        self._part['skipped'].append({'source': video.source, 'reason': reason})
        self._write_part()

    def _write_part(self) -> None:
        write_text_atomic(self._part_path, json.dumps(self._part, indent=1))

    def merge(self, videos: Sequence[Video]) -> dict[str, Any]:
        """Every process's part merged into the manifest (one process, once all have finished):
        finished videos added, `skipped` = the unreadable ones among `videos`; parts removed."""
        manifest = read_manifest(self.out_dir) or self.settings.header()
        entries = finished(self.out_dir, manifest)
        unfinished = {v.source for v in videos if v.name not in entries}
        skipped: dict[str, dict[str, str]] = {}
        for part in _parts(self.out_dir):
            for item in part['skipped']:
                if item['source'] in unfinished:
                    skipped[item['source']] = item
        manifest['videos'] = dict(sorted(entries.items()))
        manifest['skipped'] = [skipped[source] for source in sorted(skipped)]
        write_text_atomic(self.out_dir / MANIFEST, json.dumps(manifest, indent=1))
        for part in self.out_dir.glob('manifest.process-*.json'):
            part.unlink()
        return manifest
