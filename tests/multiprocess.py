"""Start N JAX processes on this machine as one multi-process run and collect their exit codes and
logs. CPU devices, gloo collectives, a free localhost port; started the way a user would start them
on several machines (`flags`), with the JAX environment variables (`env`) or as a SLURM job step
(`slurm`: the variables srun sets, JAX's own auto-detection)."""
from __future__ import annotations

import dataclasses
import os
import pathlib
import random
import signal
import socket
import subprocess
import sys
import time

from xla_env import xla_flags

ROOT = pathlib.Path(__file__).parents[1]
SHARED_CACHE_KEY = pathlib.Path(__file__).with_name('shared_cache_key.py')  # see its docstring
SLURM_PORT_BASE = 65535 - 2 ** 12 + 1  # JAX derives the SLURM coordinator port from the job id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('localhost', 0))
        return s.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(('localhost', port))
        except OSError:
            return False
    return True


def slurm_job_id() -> int:
    """A job id whose JAX coordinator port (65535 - 4095 + id % 4096) is free here."""
    while True:
        job = random.randrange(10_000, 10_000_000)
        if _port_is_free(SLURM_PORT_BASE + job % 2 ** 12):
            return job


@dataclasses.dataclass
class Run:
    processes: list[subprocess.Popen]
    logs: list[pathlib.Path]

    def wait(self, timeout: float) -> list[int]:
        """Exit codes; on timeout every process is killed and the test fails with the logs."""
        deadline = time.time() + timeout
        for process in self.processes:
            try:
                process.wait(max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f'processes still running after {timeout} s:\n{self.tails()}')
        return [p.returncode for p in self.processes]

    def kill(self, index: int | None = None) -> None:
        for i, process in enumerate(self.processes):
            if index in (None, i) and process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()

    def log(self, index: int) -> str:
        return self.logs[index].read_text(errors='replace')

    def tails(self, chars: int = 3000) -> str:
        """Each log's end, after its fatal-error lines (which a long thread dump would push out)."""
        return '\n'.join(f'--- process {i} ---\n{_fatal_lines(self.log(i))}{self.log(i)[-chars:]}'
                          for i in range(len(self.logs)))

    def check(self, timeout: float) -> None:
        codes = self.wait(timeout)
        assert codes == [0] * len(codes), f'exit codes {codes}\n{self.tails()}'


def _fatal_lines(log: str) -> str:
    lines = [l for l in log.splitlines()
             if l.startswith(('F', 'E')) and l[1:5].isdigit() or 'Fatal' in l or 'error:' in l]
    return ''.join(f'{l[:500]}\n' for l in lines[:20])


def launch(args: list[str], log_dir: pathlib.Path, *, processes: int = 2, devices: int = 2,
           mode: str = 'flags', env: dict[str, str] | None = None,
           extra: dict[int, list[str]] | None = None) -> Run:
    """Start `python *args` as `processes` processes of `devices` CPU devices each, all reading
    the compilation cache under one key (`shared_cache_key`); `extra`: more arguments for some
    processes (e.g. to make one differ)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    base = {**os.environ, 'XLA_FLAGS': xla_flags(devices),
            'JAX_PLATFORMS': 'cpu', 'JAX_CPU_COLLECTIVES_IMPLEMENTATION': 'gloo',
            **(env or {})}
    port, job = free_port(), slurm_job_id()
    run = Run([], [])
    for index in range(processes):
        command = [sys.executable, str(SHARED_CACHE_KEY), *args, *(extra or {}).get(index, [])]
        process_env = dict(base)
        if mode == 'flags':
            command += [f'--config.distributed.coordinator=localhost:{port}',
                        f'--config.distributed.num_processes={processes}',
                        f'--config.distributed.process_id={index}']
        elif mode == 'env':
            process_env.update(JAX_COORDINATOR_ADDRESS=f'localhost:{port}',
                               JAX_NUM_PROCESSES=str(processes), JAX_PROCESS_ID=str(index))
        elif mode == 'slurm':  # what `srun --ntasks=N` sets on one node
            process_env.update(SLURM_JOB_ID=str(job), SLURM_NTASKS=str(processes),
                               SLURM_PROCID=str(index), SLURM_LOCALID=str(index),
                               SLURM_STEP_NODELIST='localhost', SLURM_STEP_NUM_NODES='1')
        else:
            raise ValueError(mode)
        log = log_dir / f'process_{index}.log'
        with open(log, 'w') as out:
            run.processes.append(subprocess.Popen(command, env=process_env, cwd=ROOT, stdout=out,
                                                  stderr=subprocess.STDOUT))
        run.logs.append(log)
    return run
