"""One run per workdir: a second process started in a workdir that a run is using refuses with a
message naming that run. The lock is the kernel's (`flock`), so a killed run (even SIGKILL)
releases it with its last breath; the file only says who holds it."""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import pathlib
import socket
import sys
from typing import Iterator

from gsvit_jax.errors import UserError

log = logging.getLogger(__name__)
LOCK_FILE = '.lock'


class WorkdirBusyError(UserError):
    """Another process is running in this workdir."""


def _holder(path: pathlib.Path) -> str:
    try:
        info = json.loads(path.read_text())
        return (f'process {info["pid"]} on {info["host"]} (started {info["started"]}: '
                f'{info["command"]})')
    except (OSError, ValueError, KeyError):
        return 'another process'


@contextlib.contextmanager
def workdir_lock(workdir: str | pathlib.Path, enabled: bool = True) -> Iterator[None]:
    """Hold `<workdir>/.lock` while the block runs; refuse if another process holds it.

    `enabled=False` (the other processes of a multi-process run, which share the workdir with
    process 0) takes no lock.
    """
    if not enabled:
        yield
        return
    path = pathlib.Path(workdir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirBusyError(f'{workdir} is in use by {_holder(path)}; wait for that run '
                                   'to end (or stop it), or choose another --workdir') from None
        except OSError as e:  # a file system without locks (some network mounts): run unguarded
            log.warning('cannot lock %s (%s): not guarding against a second run in it', path, e)
        info = {'pid': os.getpid(), 'host': socket.gethostname(),
                'started': datetime.datetime.now().isoformat(timespec='seconds'),
                'command': ' '.join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
