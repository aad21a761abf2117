"""Run a training command to the end while SIGKILLing it at seeded random moments (tests of exact
resume): while an asynchronous checkpoint is being written, or a random delay after a new
checkpoint is complete."""
from __future__ import annotations

import pathlib
import random
import signal
import subprocess
import time

TEMPORARY = '*.orbax-checkpoint-tmp*'  # Orbax writes here, then renames to <step> when complete


def complete_steps(checkpoints: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in checkpoints.glob('*') if p.name.isdigit())


def run_with_kills(command: list[str], env: dict, checkpoints: pathlib.Path, *, kills: int,
                   seed: int, log: pathlib.Path, timeout_s: float = 900,
                   max_delay_s: float = 0.05) -> list[str]:
    """Start `command` again after every kill until it exits by itself (status 0 asserted);
    returns what each of the `kills` kills hit, e.g. 'writing 7.orbax-checkpoint-tmp'."""
    rng = random.Random(seed)
    hits: list[str] = []
    deadline = time.monotonic() + timeout_s
    with open(log, 'a') as output:
        while True:
            process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
            hit = _kill_at_a_random_moment(process, checkpoints, rng, deadline, max_delay_s) \
                if len(hits) < kills else None
            if hit is None:
                status = process.wait(timeout=max(1.0, deadline - time.monotonic()))
                assert status == 0, f'exit status {status} after {hits}; log: {log}'
                return hits
            hits.append(hit)


def _kill_at_a_random_moment(process: subprocess.Popen, checkpoints: pathlib.Path,
                             rng: random.Random, deadline: float, max_delay_s: float) -> str | None:
    """SIGKILL `process` mid-save or a random delay after its next complete checkpoint; None if
    it ended first."""
    mid_save = rng.random() < 0.5
    delay = rng.uniform(0, max_delay_s)
    start = (complete_steps(checkpoints) or [0])[-1]
    stale = _temporary(checkpoints)  # left by the last kill; the restarted run removes them
    while process.poll() is None:
        assert time.monotonic() < deadline, 'the run did not finish in time'
        if mid_save:
            writing = sorted(set(_temporary(checkpoints).items()) - set(stale.items()))
            if writing:
                process.send_signal(signal.SIGKILL)
                process.wait()
                return f'writing {writing[0][0]}'
        else:
            done = (complete_steps(checkpoints) or [0])[-1]
            if done > start:
                time.sleep(delay)
                process.send_signal(signal.SIGKILL)
                process.wait()
                return f'{delay * 1000:.0f} ms after step {done} was complete'
        time.sleep(0.002)
    return None


def _temporary(checkpoints: pathlib.Path) -> dict[str, int]:
    """Checkpoints being written: name -> inode (a rewritten one is a new directory)."""
    found = {}
    for path in checkpoints.glob(TEMPORARY):
        try:
            found[path.name] = path.stat().st_ino
        except FileNotFoundError:  # renamed or removed just now
            pass
    return found
