"""Run every benchmark of benchmarks/, one process each, and (`--write`) refresh RESULTS.md.

    python benchmarks/run_all.py [--quick] [--write]

Each benchmark names the machine in what it writes; this prints the machine first and a summary at
the end (ok / failed with the end of its output, and the time taken), goes on past a failure and
exits 1 if any failed. `--quick` runs each with its own smallest settings, a smoke test whose
figures mean nothing (so never with `--write`). On a GPU (JAX's first device) the full run uses
the settings of the paper's figures: encoder throughput at batch 2048 in bf16 (paper: 10,621 img/s
for M5 on a V100) with batch-1 latency (paper: 12.1 ms on an A5500), and the pre-training step's
img/s and memory at batch 100; PyTorch is left out of the GPU comparisons when torch has no CUDA,
and the CPU studies (encoder profile, strided convolutions, data pipeline: XLA:CPU figures) are
left out: `CUDA_VISIBLE_DEVICES= python benchmarks/run_all.py` runs the whole set on the host's CPU.
The benchmarks' temporary files go to a folder of this run, removed at the end.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

HERE = pathlib.Path(__file__).resolve().parent
TAIL_LINES = 15  # of a failed benchmark's output, repeated in the summary


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """A script of benchmarks/ and its arguments: always, then with `--quick` or else those of a
    full run, plus a GPU's."""

    name: str
    script: str
    args: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()
    full: tuple[str, ...] = ()
    gpu: tuple[str, ...] = ()
    host_cpu: bool = False  # a CPU study: JAX kept off any accelerator
    torch: bool = False  # times PyTorch next to JAX: `--no-torch` on a GPU where torch has no CUDA

    def command(self, quick: bool, gpu: bool, torch_cuda: bool) -> tuple[list[str], dict[str, str]]:
        """(argv, environment overrides) for this machine."""
        args = [sys.executable, str(HERE / self.script), *self.args,
                *(self.quick if quick else (*self.full, *(self.gpu if gpu else ())))]
        env = {'JAX_PLATFORMS': 'cpu'} if self.host_cpu else {}
        if self.torch and gpu:
            if torch_cuda:  # JAX would take 75% of the card up front; leave PyTorch half of it
                env['XLA_PYTHON_CLIENT_MEM_FRACTION'] = '0.5'
            else:
                args.append('--no-torch')
        return args, env


# Run in this order, the figures users ask for first (a short GPU lease may end before the last).
BENCHMARKS = (
    Benchmark('encoder inference', 'encoder_inference.py', torch=True,
              quick=('--batch', '4', '--rounds', '1', '--latency-repeats', '2',
                     '--throughput-repeats', '1', '--no-compile'),
              gpu=('--batch', '2048', '--dtype', 'bfloat16')),
    Benchmark('encoder profile', 'encoder_profile.py', host_cpu=True,
              quick=('--batch', '2', '--rounds', '1', '--repeats', '1')),
    Benchmark('strided convolutions', 'strided_conv.py', host_cpu=True,
              quick=('--batch', '2', '--rounds', '1', '--calls', '1')),
    Benchmark('pre-training step', 'pretrain_step.py', torch=True,
              quick=('--small', '--batch', '2', '--rounds', '1', '--steps', '1', '--warmup', '0'),
              gpu=('--batch', '100', '--steps', '5')),
    Benchmark('data pipeline', 'data_pipeline.py', host_cpu=True,
              quick=('--videos', '2', '--seconds', '10', '--build-workers', '1',
                     '--loader-workers', '0', '--batch', '4', '--warmup', '0', '--batches', '2',
                     '--rounds', '1')),
    Benchmark('phase feature cache', 'phase_features.py', quick=('--quick',),
              gpu=('--videos', '4', '--seconds', '240', '--workers', '0', '8')),
    Benchmark('live phase recognition', 'phase_online.py', quick=('--repeats', '3')),
    Benchmark('pre-training memory', 'pretrain_step.py', args=('--memory',),
              quick=('--small', '--memory-batch', '2', '--memory-dtypes', 'float32',
                     '--memory-remat', 'on'),
              full=('--memory-batch', '100', '50'), gpu=('--memory-batch', '100')),
    Benchmark('embedding throughput', 'embed_throughput.py', quick=('--quick',),
              gpu=('--minutes', '3')),
)


class Result(NamedTuple):
    name: str
    command: str
    status: int
    seconds: float
    tail: list[str]


def probe() -> None:
    """Print this machine as JSON (run in a child: JAX on a GPU would hold its memory here)."""
    import jax
    import torch
    from report import machine_description
    print(json.dumps({'machine': machine_description(), 'gpu': jax.devices()[0].platform == 'gpu',
                      'torch_cuda': torch.cuda.is_available()}))


def run(argv: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    """Run `argv`, echoing its output as it comes; (exit status, its last lines)."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    with subprocess.Popen(argv, cwd=HERE.parent, env={**os.environ, **env},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors='replace') as process:
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            tail.append(line.rstrip())
    return process.returncode, list(tail)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help="each benchmark's smallest settings")
    parser.add_argument('--write', action='store_true', help='update benchmarks/RESULTS.md')
    parser.add_argument('--probe', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe()
        return 0
    if args.quick and args.write:
        parser.error('--quick figures are a smoke test: they are not written to RESULTS.md')

    with tempfile.TemporaryDirectory(prefix='gsvit_run_all_') as tmp:
        temp_env = {name: tmp for name in ('TMPDIR', 'TEMP', 'TMP')}
        env = {**temp_env, 'PYTHONUNBUFFERED': '1'}
        found = subprocess.run([sys.executable, os.path.abspath(__file__), '--probe'],
                               env={**os.environ, **env}, check=True, stdout=subprocess.PIPE,
                               text=True).stdout
        machine = json.loads(found.strip().splitlines()[-1])
        print(f'Machine: {machine["machine"]}'
              + ('' if not machine['gpu'] else
                 f'; torch {"with" if machine["torch_cuda"] else "without"} CUDA'), flush=True)
        results: list[Result] = []
        missing = [b.script for b in BENCHMARKS if not (HERE / b.script).is_file()]
        todo = [b for b in BENCHMARKS if b.script not in missing
                and not (machine['gpu'] and b.host_cpu)]
        for i, bench in enumerate(todo, 1):
            argv, extra = bench.command(args.quick, machine['gpu'], machine['torch_cuda'])
            argv += ['--write'] if args.write else []
            shown = ' '.join([*(f'{k}={v}' for k, v in extra.items()), 'python',
                              os.path.relpath(argv[1], HERE.parent), *argv[2:]])
            print(f'\n===== [{i}/{len(todo)}] {bench.name}: {shown}', flush=True)
            start = time.perf_counter()
            status, tail = run(argv, {**env, **extra})
            results.append(Result(bench.name, shown, status, time.perf_counter() - start, tail))

    print(f'\n===== Summary ({"quick" if args.quick else "full"}{", written" if args.write else ""}'
          f') — {machine["machine"]}')
    for r in results:
        print(f'{"ok" if r.status == 0 else f"FAILED (exit {r.status})":>16}  {r.seconds:7.1f} s  '
              f'{r.name}: {r.command}')
        if r.status:
            print('\n'.join(f'{"":>18}| {line}' for line in r.tail))
    if missing:
        print(f'not present, skipped: {", ".join(missing)}')
    if machine['gpu']:
        print('CPU studies, skipped on a GPU (CUDA_VISIBLE_DEVICES= runs them): '
              + ', '.join(b.name for b in BENCHMARKS if b.host_cpu))
    failed = sum(1 for r in results if r.status)
    print(f'{len(results) - failed}/{len(results)} ok, '
          f'{sum(r.seconds for r in results) / 60:.1f} min in all')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
