"""Errors a user can fix, reported as one line (exit status 2) instead of a traceback."""
from __future__ import annotations

import logging
import os
import sys
from typing import Callable, NoReturn

DEBUG_ENV = 'GSVIT_JAX_DEBUG'  # set to 1 (or pass --debug) to see tracebacks


class UserError(Exception):
    """A mistake in the command, config or inputs; the message names it and what was expected."""

    exit_code = 2


class MissingFileError(FileNotFoundError, UserError):
    """A file or folder the user named is not there (still a FileNotFoundError for callers)."""


class DistributedError(UserError):
    """A multi-process run cannot start or go on (coordinator, processes, configs disagree)."""


class PeerLostError(DistributedError):
    """Another process of the run died or stopped answering; this one stops instead of hanging."""

    exit_code = 1


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an error's message (libraries' messages run to pages), or its
    type's name."""
    line = next((part.strip() for part in str(error).splitlines() if part.strip()), '')
    return line[:limit] or type(error).__name__


def describe(error: BaseException) -> str:
    """`Type: first line of the message`, or just `Type` when the message is empty (a bare
    KeyError would otherwise read "KeyError: KeyError")."""
    line = first_line(error)
    name = type(error).__name__
    return name if line == name else f'{name}: {line}'


def debug_requested(flag: bool = False) -> bool:
    return flag or os.environ.get(DEBUG_ENV, '').lower() in ('1', 'true', 'yes')


def exit_with(prog: str, error: UserError, *, immediate: bool = False) -> NoReturn:
    """Print `prog: error: <message>` to stderr and exit with the error's status.

    The exit is immediate (`os._exit`) when asked for (e.g. from a watchdog thread) and in a
    multi-process run: there the interpreter's exit handlers would wait in jax.distributed's
    shutdown barrier for the other processes, which may be the ones that died.
    """
    print(f'{prog}: error: {error}', file=sys.stderr, flush=True)
    if immediate or _distributed_running():
        logging.shutdown()
        sys.stdout.flush()
        os._exit(error.exit_code)
    sys.exit(error.exit_code)


def _distributed_running() -> bool:
    jax = sys.modules.get('jax')
    return bool(jax is not None and jax.distributed.is_initialized())


def run_reporting_errors(prog: str, main: Callable[[], object], *, debug: bool = False) -> object:
    """`main()`, with a `UserError` reported as one line unless debugging was asked for. The
    environment's switches are checked first, before any slow work."""
    try:
        from gsvit_jax.kernels import switches  # imports this module
        switches.check_environment()
        return main()
    except UserError as e:
        if debug_requested(debug):
            raise
        exit_with(prog, e)
