"""Cholec80 surgical phase of every second of a video, from a trained phase run.

    gsvit-phase predict VIDEO.mp4 [VIDEO.mp4 ...] --checkpoint WORKDIR [--out DIR]

(also `python -m gsvit_jax.phase`). WORKDIR is an `experiments/train_phase.py` workdir. Each
video gets `<name>.phases.csv` (one row per second: time, phase, confidence, the 7
probabilities) and `<name>.timeline.png`.
"""
from __future__ import annotations

import argparse
import pathlib
from typing import Sequence

from gsvit_jax.errors import MissingFileError, UserError, run_reporting_errors


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='gsvit-phase', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', required=True)
    predict = commands.add_parser(
        'predict', help='per-second phases of a video: CSV + timeline',
        description='Per-second phases of each video, from the phase run in --checkpoint: '
                    '<name>.phases.csv and <name>.timeline.png per video.')
    predict.add_argument('videos', nargs='+', help='video files (anything PyAV/FFmpeg decodes)')
    predict.add_argument('--checkpoint', required=True,
                         help='workdir of experiments/train_phase.py (config.json + checkpoints)')
    predict.add_argument('--out', default=None, help='output folder (default: next to the video)')
    predict.add_argument('--batch', type=int, default=32, help='frames encoded per call')
    predict.add_argument('--debug', action='store_true',
                         help='show the traceback of an error (also GSVIT_JAX_DEBUG=1)')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run_reporting_errors('gsvit-phase', lambda: predict(args), debug=args.debug)
    return 0


def predict(args: argparse.Namespace) -> None:
    """Check every argument, then load the run once and predict each video."""
    if args.batch < 1:
        raise UserError(f'--batch {args.batch}: expected at least 1')
    for video in args.videos:
        if not pathlib.Path(video).is_file():
            raise MissingFileError(f'{video}: no such video file')
    from gsvit_jax.phase.predict import predict_video
    from gsvit_jax.phase.predictor import PhaseModel
    try:
        model = PhaseModel.from_workdir(args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from e
    for video in args.videos:
        try:
            result = predict_video(video, args.checkpoint, args.out, batch_size=args.batch,
                                   model=model)
        except (FileNotFoundError, ValueError) as e:
            raise UserError(str(e)) from e
        print(f'{video}: {len(result["phases"])} s -> {result["csv"]}, {result["timeline"]}')
