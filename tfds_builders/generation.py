"""Per-video example generation shared by the builders: parallel, skip-and-report, optional Beam.

A builder describes each source video as a picklable task and gives a module-level function
`process(task) -> list[(key, example)]` that decodes the whole video (so a video that fails half-way
contributes nothing) or raises `VideoReadError`. `generate(...)` then

- runs `process` over the tasks in worker processes (`num_workers`, default: all cores) and yields
  the examples, or, when the build was started with Beam options, returns the equivalent Beam
  PTransform so TFDS runs it on the chosen runner (local, Dataflow, Flink, Spark);
- skips videos that raise `VideoReadError`, logs each one, and writes the list with the reason to
  `<report_dir>/skipped_videos_<split>.json` (merged with what earlier splits wrote). Under Beam
  the workers record skipped videos as Beam metrics and the mixin writes the same reports from
  them once the pipeline has finished (`write_beam_reports`).
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
from typing import Any, Callable, Iterator, Sequence

from etils import epath

from tfds_builders.formats import tfrecord_for_tf_data
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
                 skipped: Sequence[tuple[str, str]]) -> epath.Path:
    """Atomically write `skipped_videos_<split>.json`: counts and (video, reason) pairs.

    `report_dir` may be any path TFDS can write (local, or gs:// on a cluster)."""
    report_dir = epath.Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / f'skipped_videos_{split}.json'
    body = {'split': split, 'videos_total': total, 'videos_skipped': len(skipped),
            'skipped': [{'video': video, 'reason': reason} for video, reason in skipped]}
    tmp = report_dir / f'.{path.name}.tmp'
    tmp.write_text(json.dumps(body, indent=2))
    tmp.replace(path)
    return path


def generate(tasks: Sequence[Any], process: Callable[[Any], list[KeyExample]], *,
             split: str, report_dir: str | os.PathLike, task_name: Callable[[Any], str] = str,
             num_workers: int | None = None,
             final_dir: str | os.PathLike | None = None) -> Iterator[KeyExample]:
    """Yield every example of every readable video; report the unreadable ones (see module doc).
    Messages name the report in `final_dir`, where the build moves it when done (default
    `report_dir`)."""
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
                    epath.Path(final_dir or report_dir) / f'skipped_videos_{split}.json')


BEAM_NAMESPACE = 'gsvit'


def beam_generate(tasks: Sequence[Any], process: Callable[[Any], list[KeyExample]], *,
                  split: str, task_name: Callable[[Any], str] = str):
    """The same work as a Beam PTransform: one element per video, unreadable videos counted
    (Beam counter `<split>/videos_skipped`), logged by the workers and recorded with the reason
    in the Beam string set `<split>/skipped` (Beam caps a string set at ~1 MB of text)."""
    import apache_beam as beam

    skipped_counter = beam.metrics.Metrics.counter(BEAM_NAMESPACE, f'{split}/videos_skipped')
    skipped_set = beam.metrics.Metrics.string_set(BEAM_NAMESPACE, f'{split}/skipped')

    def run(task):
        _, examples, error = _safe_process((process, task))
        if error:
            log.warning('skipping %s: %s', task_name(task), error)
            skipped_counter.inc()
            skipped_set.add(json.dumps([task_name(task), error]))
        return examples

    return beam.Create(list(tasks)) | f'Process_{split}' >> beam.FlatMap(run)


def write_beam_reports(pipeline_result, report_dir: str | os.PathLike, totals: dict[str, int],
                       final_dir: str | os.PathLike | None = None) -> None:
    """After a Beam run: `skipped_videos_<split>.json` for each split in `totals` (split -> number
    of videos), from the string sets `beam_generate` recorded; messages name `final_dir`."""
    from apache_beam.metrics.metric import MetricsFilter

    query = pipeline_result.metrics().query(MetricsFilter().with_namespace(BEAM_NAMESPACE))
    skipped: dict[str, set[str]] = {}
    for result in query.get('string_sets', []):
        split, _, name = result.key.metric.name.rpartition('/')
        if name == 'skipped':
            value = result.committed if result.committed is not None else result.attempted
            skipped[split] = set(value or ())
    for split, total in totals.items():
        entries = sorted(tuple(json.loads(s)) for s in skipped.get(split, ()))
        write_report(report_dir, split, total, entries)
        if entries:
            log.warning('%s: skipped %d of %d videos (listed in %s)', split, len(entries), total,
                        epath.Path(final_dir or report_dir) / f'skipped_videos_{split}.json')


class PerVideoBuilderMixin:
    """Mixin for a `tfds.core.GeneratorBasedBuilder` whose examples come video by video.

    Remembers whether the build was started with Beam (`--beam_pipeline_options` / `beam_runner`)
    and routes `_per_video_examples` to Beam or to the local process pool accordingly; after a
    Beam run, `_process_pipeline_result` writes the skipped-videos reports.
    `num_workers` (class or instance attribute) bounds the local pool; None = all cores.
    """

    num_workers: int | None = None
    _use_beam: bool = False
    _final_data_path: epath.Path | None = None

    def download_and_prepare(self, *args, **kwargs):
        self._final_data_path = self.data_path  # before TFDS swaps in its temporary folder
        return super().download_and_prepare(*args, **kwargs)

    def dataset_info_from_configs(self, **kwargs):
        info = super().dataset_info_from_configs(**kwargs)
        # TFDS looks up the info of a dataset not built yet in its GCS bucket, which does not hold
        # ours, and (TFDS 4.9.10) leaves an empty /tmp/tmp*tfds folder behind on every builder.
        info.initialize_from_bucket = lambda: None
        return info

    def _as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
        tfrecord_for_tf_data(self.info, self.data_dir)
        return super()._as_dataset(split, decoders=decoders, read_config=read_config,
                                   shuffle_files=shuffle_files)

    @property
    def final_data_path(self) -> epath.Path:
        """The dataset's folder. During a build `data_path` is TFDS's temporary `incomplete.*`
        folder, renamed to this one at the end: messages name this one, which will exist."""
        return self._final_data_path or self.data_path

    def _generate_splits(self, dl_manager, download_config):
        self._use_beam = bool(download_config.beam_options or download_config.beam_runner)
        self._beam_totals: dict[str, int] = {}
        return super()._generate_splits(dl_manager, download_config)

    def _process_pipeline_result(self, pipeline_result) -> None:
        write_beam_reports(pipeline_result, self.data_path, self._beam_totals, self.final_data_path)
        super()._process_pipeline_result(pipeline_result)

    def _per_video_examples(self, tasks: Sequence[Any], process: Callable[[Any], list[KeyExample]],
                            *, split: str, task_name: Callable[[Any], str] = str):
        if self._use_beam:
            self._beam_totals[split] = len(tasks)
            return beam_generate(tasks, process, split=split, task_name=task_name)
        return generate(tasks, process, split=split, report_dir=self.data_path,
                        task_name=task_name, num_workers=self.num_workers,
                        final_dir=self.final_data_path)
