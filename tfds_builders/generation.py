"""Per-video example generation shared by the builders: parallel, skip-and-report, optional Beam.

A builder describes each source video as a picklable task and gives a module-level function
`process(task) -> list[(key, example)]` that decodes the whole video (so a video that fails half-way
contributes nothing) or raises `VideoReadError`. `generate(...)` then

- runs `process` over the tasks in worker processes (`num_workers`, default: all cores) and yields
  the examples, or, when the build was started with Beam options, returns the equivalent Beam
  PTransform so TFDS runs it on the chosen runner (local, Dataflow, Flink, Spark);
- skips videos that raise `VideoReadError`, logs each one, and writes the list with the reason to
  `<report_dir>/skipped_videos_<split>.json` (merged with what earlier splits wrote).
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pathlib
import tempfile
from typing import Any, Callable, Iterator, Sequence

from tfds_builders.video import VideoReadError

log = logging.getLogger(__name__)

KeyExample = tuple[str, dict[str, Any]]


def _safe_process(args: tuple[Callable[[Any], list[KeyExample]], Any]) -> tuple[Any, list, str]:
    process, task = args
    try:
        return task, process(task), ''
    except VideoReadError as e:
        return task, [], str(e)


def write_report(report_dir: str | os.PathLike, split: str, total: int,
                 skipped: Sequence[tuple[str, str]]) -> pathlib.Path:
    """Atomically write `skipped_videos_<split>.json`: counts and (video, reason) pairs."""
    report_dir = pathlib.Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / f'skipped_videos_{split}.json'
    body = {'split': split, 'videos_total': total, 'videos_skipped': len(skipped),
            'skipped': [{'video': video, 'reason': reason} for video, reason in skipped]}
    with tempfile.NamedTemporaryFile('w', dir=report_dir, delete=False, suffix='.tmp') as f:
        json.dump(body, f, indent=2)
    os.replace(f.name, path)
    return path


def generate(tasks: Sequence[Any], process: Callable[[Any], list[KeyExample]], *,
             split: str, report_dir: str | os.PathLike, task_name: Callable[[Any], str] = str,
             num_workers: int | None = None) -> Iterator[KeyExample]:
    """Yield every example of every readable video; report the unreadable ones (see module doc)."""
    workers = num_workers if num_workers is not None else (os.cpu_count() or 1)
    skipped: list[tuple[str, str]] = []
    jobs = [(process, task) for task in tasks]
    if workers <= 1 or len(jobs) <= 1:
        results = map(_safe_process, jobs)
        pool = None
    else:
        pool = multiprocessing.get_context('spawn').Pool(min(workers, len(jobs)))
        results = pool.imap(_safe_process, jobs)
    try:
        for task, examples, error in results:
            if error:
                log.warning('skipping %s: %s', task_name(task), error)
                skipped.append((task_name(task), error))
            yield from examples
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    write_report(report_dir, split, len(tasks), skipped)
    if skipped:
        log.warning('%s: skipped %d of %d videos (listed in %s)', split, len(skipped), len(tasks),
                    pathlib.Path(report_dir) / f'skipped_videos_{split}.json')


def beam_generate(tasks: Sequence[Any], process: Callable[[Any], list[KeyExample]], *,
                  split: str, task_name: Callable[[Any], str] = str):
    """The same work as a Beam PTransform: one element per video, unreadable videos counted
    (Beam counter `<split>/videos_skipped`) and logged by the workers."""
    import apache_beam as beam

    skipped_counter = beam.metrics.Metrics.counter('gsvit', f'{split}/videos_skipped')

    def run(task):
        _, examples, error = _safe_process((process, task))
        if error:
            log.warning('skipping %s: %s', task_name(task), error)
            skipped_counter.inc()
        return examples

    return beam.Create(list(tasks)) | f'Process_{split}' >> beam.FlatMap(run)


class PerVideoBuilderMixin:
    """Mixin for a `tfds.core.GeneratorBasedBuilder` whose examples come video by video.

    Remembers whether the build was started with Beam (`--beam_pipeline_options` / `beam_runner`)
    and routes `_per_video_examples` to Beam or to the local process pool accordingly.
    `num_workers` (class or instance attribute) bounds the local pool; None = all cores.
    """

    num_workers: int | None = None
    _use_beam: bool = False

    def _generate_splits(self, dl_manager, download_config):
        self._use_beam = bool(download_config.beam_options or download_config.beam_runner)
        return super()._generate_splits(dl_manager, download_config)

    def _per_video_examples(self, tasks: Sequence[Any], process: Callable[[Any], list[KeyExample]],
                            *, split: str, task_name: Callable[[Any], str] = str):
        if self._use_beam:
            return beam_generate(tasks, process, split=split, task_name=task_name)
        return generate(tasks, process, split=split, report_dir=self.data_path,
                        task_name=task_name, num_workers=self.num_workers)
