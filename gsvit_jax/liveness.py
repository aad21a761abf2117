"""Notice quickly, and report in one line, that another process of a multi-process run died.

Each process bumps its own counter in JAX's coordination service every few seconds and reads the
others'. A peer whose counter stands still for `timeout_s`, or a coordination service that stops
answering (process 0 died), ends this process with a `PeerLostError` line and exit status 1.

Why not rely on JAX alone: a collective that was waiting on the dead peer may never fail (e.g. one
still setting up its connections), and JAX's own heartbeat check then ends the process from C++
with SIGABRT and its own message. This watch fires first: keep `timeout_s` below
`distributed.heartbeat_timeout_s`.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from typing import Callable, Iterator

import jax

from gsvit_jax.errors import PeerLostError, exit_with, first_line

log = logging.getLogger(__name__)
DONE = 'done'  # a process that left its watched block normally is no longer expected to beat
_watch_ids = itertools.count()


def _client():
    from jax._src import distributed as jax_distributed  # the client behind jax.distributed
    return jax_distributed.global_state.client


class PeerWatch:
    """The watching thread of one process; `fire(message)` is called once, from that thread."""

    def __init__(self, name: str, timeout_s: float, fire: Callable[[str], None],
                 interval_s: float = 2.0):
        self.prefix = f'gsvit_jax/alive/{name}/'
        self.timeout_s, self.interval_s, self.fire = timeout_s, interval_s, fire
        self.me, self.count = jax.process_index(), jax.process_count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='gsvit-peer-watch', daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, finished: bool) -> None:
        """Stop watching; `finished`: tell the others this process is done, not dead."""
        self._stop.set()
        self._thread.join(timeout=10)  # it may be inside a call to a coordinator that died
        if finished:
            try:
                _client().key_value_set(f'{self.prefix}{self.me}', DONE, allow_overwrite=True)
            except Exception as e:  # noqa: BLE001  the run is ending anyway
                log.warning('could not tell the other processes that this one is done: %s', e)

    def _run(self) -> None:
        client, beat = _client(), 0
        last_ok = started = time.monotonic()
        seen: dict[int, tuple[str, float]] = {}  # process -> (last value, when it changed)
        while not self._stop.wait(self.interval_s):
            now = time.monotonic()
            try:
                beat += 1
                client.key_value_set(f'{self.prefix}{self.me}', str(beat), allow_overwrite=True)
                values = {int(k.rsplit('/', 1)[-1]): v
                          for k, v in client.key_value_dir_get(self.prefix)}
            except Exception as e:  # noqa: BLE001  coordination service gone or slow
                if now - last_ok > self.timeout_s:
                    first = first_line(e, 200)
                    self.fire(f'the coordination service (process 0) has not answered for '
                              f'{now - last_ok:.0f} s: process 0 died or hung ({first})')
                    return
                continue
            last_ok = now
            for peer in range(self.count):
                if peer == self.me or values.get(peer) == DONE:
                    continue
                value = values.get(peer, '')
                if seen.get(peer, (None,))[0] != value:
                    seen[peer] = (value, now if value else started)
                elif now - seen[peer][1] > self.timeout_s:
                    self.fire(f'process {peer} gave no sign of life for '
                              f'{now - seen[peer][1]:.0f} s: it died or hung')
                    return


@contextlib.contextmanager
def watch_peers(timeout_s: float, last_checkpoint: Callable[[], int | None] | None = None,
                prog: str = 'gsvit_jax') -> Iterator[None]:
    """Watch the run's other processes while the block runs (nothing with one process or
    `timeout_s` <= 0). A lost peer ends this process: one line naming it and the checkpoint
    step to resume from, exit status 1."""
    if jax.process_count() == 1 or timeout_s <= 0:
        yield
        return

    def fire(reason: str) -> None:
        step = last_checkpoint() if last_checkpoint else None
        resume = (f'; restart all processes to resume from checkpoint step {step}'
                  if step is not None else '; restart all processes')
        exit_with(prog, PeerLostError(f'process {jax.process_index()} lost contact with another '
                                      f'process of the run ({reason}; see its log){resume}'),
                  immediate=True)

    watch = PeerWatch(str(next(_watch_ids)), timeout_s, fire)
    watch.start()
    finished = False
    try:
        yield
        finished = True
    finally:
        watch.stop(finished=finished)
