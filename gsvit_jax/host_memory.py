"""Huge pages for the host memory XLA:CPU allocates afresh at every training step.

XLA:CPU allocates a step's temporaries when it runs the step and frees them after, and glibc hands
allocations this large straight back to the kernel, so every CPU pre-training step faults in its
buffers again page by page: ~255,000 page faults and 0.5 s of system time per full-size step at
batch 8 (benchmarks/RESULTS.md). With glibc's `glibc.malloc.hugetlb=1` tunable those buffers get
transparent huge pages: 2,000-4,000 faults, 0.2 s, a 6% faster step. A tunable is read when a
process starts, so the pre-training and phase-training entry points (the latter encodes every
frame for its feature cache) re-execute themselves once with it set (`reexec_with_huge_pages`);
`GSVIT_HUGE_PAGES=0` turns this off.
"""
from __future__ import annotations

import os
import pathlib
import platform
import sys

TUNABLE = 'glibc.malloc.hugetlb=1'
_THP_MODE = pathlib.Path('/sys/kernel/mm/transparent_hugepage/enabled')


def supported() -> bool:
    """Linux with glibc 2.35+ (the tunable's first release) and transparent huge pages on."""
    if sys.platform != 'linux' or os.environ.get('GSVIT_HUGE_PAGES', '1') == '0':
        return False
    libc, version = platform.libc_ver()
    try:
        if libc != 'glibc' or tuple(map(int, version.split('.')[:2])) < (2, 35):
            return False
        return '[never]' not in _THP_MODE.read_text()
    except (OSError, ValueError):
        return False


def environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) with the tunable added where it is `supported()`."""
    env = dict(os.environ if env is None else env)
    tunables = env.get('GLIBC_TUNABLES', '')
    if supported() and 'glibc.malloc.hugetlb' not in tunables:
        env['GLIBC_TUNABLES'] = f'{tunables}:{TUNABLE}' if tunables else TUNABLE
    return env


def reexec_with_huge_pages() -> None:
    """Replace this process by the same command with the tunable set, unless it is set already or
    not supported, or the script runs inside another program (`runpy`, a test harness: its command
    line is not the script's). Call it first thing in an entry point: output not yet flushed would
    be lost."""
    if sys.orig_argv[len(sys.orig_argv) - len(sys.argv):] != sys.argv:
        return
    env = environment()
    if env.get('GLIBC_TUNABLES') != os.environ.get('GLIBC_TUNABLES'):
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
