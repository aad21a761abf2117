"""Each implementation of a comparison in a process of its own, timed round by round from the parent.

Why: once oneDNN has run from JAX in a process, PyTorch's CPU kernels in that process slow down
(PyTorch's wheel and oneDNN share one `libgomp.so.1`; batch-1 eager 23 -> 70 ms, RESULTS.md), and
two full training states in one process compete for memory. So the JAX and PyTorch sides of a
benchmark each live in a spawned worker, and the parent interleaves their rounds so that machine
noise hits all of them alike: one run, no cross-talk. The parent itself never starts a JAX backend
(on a GPU it would take the memory the workers need). Every worker starts with the huge-page
malloc tunable the pre-training entry point sets for itself (`gsvit_jax.host_memory`): the same
for both frameworks, and the configuration a JAX user gets.
"""
from __future__ import annotations

import multiprocessing
import os
import resource
import time
import traceback
from typing import Any, Callable

from gsvit_jax import host_memory


class WorkerError(RuntimeError):
    """A worker's setup or call failed; the message holds its traceback."""


class Worker:
    """A spawned process holding the implementations `setup(*args)` returns: {name: callable}.

    `setup` and the callables' arguments and results cross a pipe (picklable: numbers, strings,
    numpy arrays); `setup` must be a module-level function of an importable module or of the
    running script (guarded by `if __name__ == '__main__'`).
    """

    def __init__(self, setup: Callable[..., dict[str, Callable]], *args: Any):
        context = multiprocessing.get_context('spawn')  # a fresh interpreter: no shared libraries
        os.environ.update(host_memory.environment())  # read by glibc when the worker starts
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, setup, args), daemon=True)
        self._process.start()
        child.close()
        self.names: list[str] = self._reply()

    def call(self, name: str, *args: Any) -> Any:
        """`name`'s result on `args`, run in the worker."""
        self._conn.send(('call', name, args, 1))
        return self._reply()[0][1]

    def timed(self, name: str, repeats: int, *args: Any) -> list[tuple[float, Any]]:
        """(seconds, result) of `repeats` back-to-back calls of `name` on `args`."""
        self._conn.send(('call', name, args, repeats))
        return self._reply()

    def peak_rss_gib(self) -> float:
        self._conn.send(('rss', None, (), 0))
        return self._reply()

    def close(self) -> None:
        if self._process.is_alive():
            self._conn.send(None)
            self._process.join(timeout=60)
        if self._process.is_alive():
            self._process.kill()
        self._conn.close()

    def _reply(self) -> Any:
        try:
            status, value = self._conn.recv()
        except EOFError:
            raise WorkerError(f'worker exited (status {self._process.exitcode})') from None
        if status == 'error':
            raise WorkerError(value)
        return value

    def __enter__(self) -> 'Worker':
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _serve(conn, setup: Callable[..., dict[str, Callable]], args: tuple) -> None:
    try:
        impls = setup(*args)
        conn.send(('ok', list(impls)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(('error', traceback.format_exc()))
        return
    while (message := conn.recv()) is not None:
        op, name, call_args, repeats = message
        try:
            if op == 'rss':
                conn.send(('ok', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20))
                continue
            results = []
            for _ in range(repeats):
                start = time.perf_counter()
                result = impls[name](*call_args)
                results.append((time.perf_counter() - start, result))
            conn.send(('ok', results))
        except BaseException:  # noqa: BLE001
            conn.send(('error', traceback.format_exc()))
