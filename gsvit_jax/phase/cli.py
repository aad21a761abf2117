"""Cholec80 surgical phase of every second of a video, from a trained phase run.

    gsvit-phase predict VIDEO.mp4 [VIDEO.mp4 ...] --checkpoint WORKDIR [--out DIR]

(also `python -m gsvit_jax.phase`). WORKDIR is an `experiments/train_phase.py` workdir. Each
video gets `<name>.phases.csv` (one row per second: time, phase, confidence, the 7
probabilities) and `<name>.timeline.png`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from gsvit_jax.phase.predict import predict_video
    from gsvit_jax.phase.predictor import PhaseModel
    try:
        model = PhaseModel.from_workdir(args.checkpoint)
        for video in args.videos:
            result = predict_video(video, args.checkpoint, args.out, batch_size=args.batch,
                                   model=model)
            print(f'{video}: {len(result["phases"])} s -> {result["csv"]}, {result["timeline"]}')
    except (FileNotFoundError, ValueError) as e:
        print(f'gsvit-phase: error: {e}', file=sys.stderr)
        return 2
    return 0
