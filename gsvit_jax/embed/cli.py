"""`gsvit-embed INPUT... --out DIR` (also `python -m gsvit_jax.embed`): GSViT latents of surgery
videos, one file per video, resumable; `gsvit-embed search ...` searches such a folder.

Mistakes in the command (missing inputs, nothing to embed, bad options, a weights file that is
not there, an output folder made with other settings) are found before the model is loaded and
reported as one line with exit status 2 (`--debug` shows the traceback).
"""
from __future__ import annotations

import argparse
import logging
import pathlib
import sys
from typing import NoReturn, Sequence

from ml_collections import ConfigDict

from gsvit_jax.embed.inputs import Video, find_videos
from gsvit_jax.embed.store import DTYPES, OUTPUTS, Settings, check_folder
from gsvit_jax.errors import UserError, first_line, run_reporting_errors

PROG = 'gsvit-embed'


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line as a `UserError` (one line, status 2), not usage + error."""

    def error(self, message: str) -> NoReturn:
        raise UserError(message)


def build_parser() -> argparse.ArgumentParser:
    from gsvit_jax.embed.run import default_workers
    from gsvit_jax.models.efficientvit import VARIANTS
    parser = _Parser(prog=PROG, description=__doc__.split('\n\n')[0])
    parser.add_argument('inputs', nargs='+', metavar='INPUT',
                        help='video files, folders (searched recursively: every video file, and '
                             'every folder of images as one video) or tfds:NAME/SPLIT (a prepared '
                             'TFDS split, e.g. tfds:cholec80/test; see --data-dir)')
    parser.add_argument('--out', required=True, metavar='DIR',
                        help='output folder: <name>.npz per video and manifest.json; rerun to '
                             'resume')
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument('--fps', type=float, default=1.0,
                      help='frames per second to sample (default: %(default)s)')
    rate.add_argument('--every-frame', action='store_true', help='embed every frame')
    parser.add_argument('--output', choices=OUTPUTS, default='latent',
                        help='latent: the flattened feature map (6144-d for GSViT); pooled: its '
                             'spatial mean (384-d). Default: %(default)s')
    parser.add_argument('--dtype', choices=DTYPES, default='float16',
                        help='how latents are stored (default: %(default)s)')
    parser.add_argument('--weights', metavar='PATH',
                        help='GSViT.pkl, a .pth / .safetensors file or an Orbax checkpoint '
                             'directory; none: a RANDOM encoder (for trying the tool only)')
    parser.add_argument('--variant', choices=sorted(VARIANTS), default='m5',
                        help='EfficientViT variant of the weights (GSViT: m5)')
    parser.add_argument('--img-size', type=int, default=224, help='encoder input size (224)')
    parser.add_argument('--batch-size', type=int, default=64,
                        help='frames per encoder call, split over this process\'s devices')
    parser.add_argument('--workers', type=int, default=default_workers(),
                        help='decoding threads (default: the cores, at most 8: %(default)s)')
    parser.add_argument('--data-dir', help='TFDS data_dir of tfds: inputs (default: TFDS\'s)')
    multi = parser.add_argument_group(
        'several processes', 'each embeds its share of the videos into the shared --out folder '
        '(the --config.distributed.* spellings of the training scripts work too)')
    for flag, kind, default, metavar, text in (
            ('coordinator', str, '', 'HOST:PORT', 'address of process 0'),
            ('num_processes', int, 0, 'N', 'how many processes'),
            ('process_id', int, -1, 'I', 'this process: 0 ... N-1')):
        multi.add_argument(f'--{flag.replace("_", "-")}', type=kind, default=default,
                           metavar=metavar, help=text)
        multi.add_argument(f'--config.distributed.{flag}', dest=flag, type=kind, default=default,
                           help=argparse.SUPPRESS)
    multi.add_argument('--multihost', action='store_true',
                       help='join a run described by the environment (JAX_COORDINATOR_ADDRESS, '
                            'JAX_NUM_PROCESSES, JAX_PROCESS_ID; or SLURM)')
    parser.add_argument('--debug', action='store_true',
                        help='show the traceback of a user error (also GSVIT_JAX_DEBUG=1)')
    return parser


def _check_numbers(args: argparse.Namespace) -> None:
    if args.img_size < 32 or args.img_size % 32:
        raise UserError(f'--img-size {args.img_size}: expected a positive multiple of 32 '
                        '(GSViT: 224)')
    for flag, value in (('--batch-size', args.batch_size), ('--workers', args.workers)):
        if value < 1:
            raise UserError(f'{flag} {value}: expected at least 1')
    if args.weights and not pathlib.Path(args.weights).exists():
        raise UserError(f'--weights {args.weights}: no such file or checkpoint directory')


def _prepare(args: argparse.Namespace) -> tuple[list[Video], float | None]:
    """Every check that needs no model: options, inputs, the output folder."""
    _check_numbers(args)
    fps = None if args.every_frame else args.fps
    settings = Settings(None, args.weights or 'random', args.variant, args.img_size, args.output,
                        args.dtype, fps)  # checks fps, output, dtype
    videos = find_videos(args.inputs, args.data_dir)
    check_folder(args.out, settings, videos)
    return videos, fps


def _join_processes(args: argparse.Namespace) -> None:
    from gsvit_jax import distributed
    config = ConfigDict({'multihost': args.multihost,
                         'distributed': distributed.distributed_config()})
    config.distributed.coordinator = args.coordinator
    config.distributed.num_processes = args.num_processes
    config.distributed.process_id = args.process_id
    distributed.initialize(config)


def _load_encoder(args: argparse.Namespace):
    from gsvit_jax import api
    if not args.weights:
        print(f'{PROG}: warning: no --weights: embedding with a RANDOM encoder, whose latents '
              'mean nothing (for trying the tool only)', file=sys.stderr, flush=True)
    try:
        return api.load_encoder(args.weights, variant=args.variant, img_size=args.img_size,
                                batch_size=args.batch_size)
    except (OSError, ValueError, KeyError) as e:
        first = first_line(e)
        raise UserError(f'--weights {args.weights} cannot be loaded as EfficientViT-'
                        f'{args.variant} at {args.img_size} px: {first}') from e


def _embed(args: argparse.Namespace) -> None:
    videos, fps = _prepare(args)
    _join_processes(args)
    encoder = _load_encoder(args)
    from gsvit_jax.embed.run import embed_videos
    summary = embed_videos(videos, args.out, encoder, fps=fps, output=args.output,
                           dtype=args.dtype, batch_size=args.batch_size, workers=args.workers)
    print(f'{PROG}: {summary.line()}', flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; a user error exits with status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ['search']:
        from gsvit_jax.embed import search
        return search.main(argv[1:])
    logging.basicConfig(level=logging.WARNING, format=f'{PROG}: %(levelname)s: %(message)s')
    run_reporting_errors(PROG, lambda: _embed(build_parser().parse_args(argv)),
                         debug='--debug' in argv)
    return 0
