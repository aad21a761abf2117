"""Prepare a dataset without the `tfds build` CLI (which needs apache-beam and mlcroissant).

    python -m tfds_builders.build cholec80 --manual_dir=/data/cholec80 [--config=40_8_32]
    python -m tfds_builders.build gensurgery --manual_dir=/data/gensurgery --workers=16

Writes under --data_dir (default ~/tensorflow_datasets), in the --file_format chosen:
  array_record (default)  tfds.data_source and the Grain pipelines; no TensorFlow needed
  tfrecord                tfds.load / as_dataset (tf.data); needs TensorFlow (the tf extra)
  both                    both files, one dataset: every reader above works; needs TensorFlow
For cluster builds with Beam use `tfds build ... --beam_pipeline_options=...` (the `beam` extra).
"""
from __future__ import annotations

import argparse
import logging
import pathlib
import sys
from typing import Sequence

import tensorflow_datasets as tfds

import tfds_builders  # noqa: F401  (registers the builders)
from gsvit_jax.errors import UserError, run_reporting_errors
from gsvit_jax.quiet_logs import hide_unactionable_logs
from tfds_builders.formats import ARRAY_RECORD, BOTH, TFRECORD, add_tfrecord_copy


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog='python -m tfds_builders.build', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('name', choices=('cholec80', 'gensurgery'))
    parser.add_argument('--manual_dir', required=True, help='downloaded videos (see the README)')
    parser.add_argument('--data_dir', default=None, help='where prepared datasets go')
    parser.add_argument('--config', default=None, help='builder config name (default: default)')
    parser.add_argument('--workers', type=int, default=None, help='decoding processes (all cores)')
    parser.add_argument('--file_format', choices=(ARRAY_RECORD, TFRECORD, BOTH),
                        default=ARRAY_RECORD, help='which readers the dataset serves (see above; '
                        'default: %(default)s)')
    parser.add_argument('--debug', action='store_true',
                        help='show the traceback of an error (also GSVIT_JAX_DEBUG=1)')
    args = parser.parse_args(argv)
    return run_reporting_errors('python -m tfds_builders.build', lambda: build(args),
                                debug=args.debug)


def check_args(args: argparse.Namespace) -> None:
    """The manual dir holds what the builder reads, the config and worker count exist."""
    configs = [c.name for c in tfds.builder_cls(args.name).BUILDER_CONFIGS]
    if args.config is not None and args.config not in configs:
        raise UserError(f'--config={args.config}: {args.name} has no such builder config; '
                        f'expected one of {", ".join(configs)}')
    if args.workers is not None and args.workers < 1:
        raise UserError(f'--workers={args.workers}: expected at least 1')
    manual = pathlib.Path(args.manual_dir)
    if not manual.is_dir():
        raise UserError(f'--manual_dir={manual}: no such folder; expected the downloaded '
                        f'{args.name} videos (README "Data")')
    if args.name == 'cholec80':
        from tfds_builders.cholec80.cholec80_dataset_builder import LAYOUT, manual_root
        if manual_root(manual) is None:
            raise UserError(f'--manual_dir={manual}: no videos/ folder in it (or in its cholec80/ '
                            'sub-folder); expected the Cholec80 release:\n' + LAYOUT)
    else:
        from tfds_builders.gensurgery.url_lists import find_videos
        if not find_videos(manual)[0]:
            raise UserError(f'--manual_dir={manual}: no GenSurgery video in it (files named by '
                            'their YouTube ID, as python -m tfds_builders.gensurgery.download '
                            'writes them)')


def build(args: argparse.Namespace) -> str:
    check_args(args)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    hide_unactionable_logs()
    name = f'{args.name}/{args.config}' if args.config else args.name
    written = ARRAY_RECORD if args.file_format == BOTH else args.file_format
    builder = tfds.builder(name, data_dir=args.data_dir, file_format=written)
    builder.num_workers = args.workers
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=args.manual_dir))
    if args.file_format == BOTH:
        add_tfrecord_copy(builder.data_dir)
    print(f'prepared {builder.info.full_name} in {builder.data_dir} ({args.file_format}): '
          + ', '.join(f'{s} {info.num_examples} examples' for s, info in builder.info.splits.items()))
    return builder.data_dir


if __name__ == '__main__':
    main(sys.argv[1:])
