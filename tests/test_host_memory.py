"""Huge pages for XLA:CPU's per-step buffers (gsvit_jax.host_memory): the tunable is added once,
existing tunables are kept, it can be turned off, and re-executing keeps the command line."""
import os
import subprocess
import sys

import pytest

from gsvit_jax import host_memory


def test_tunable_added_once_and_existing_tunables_kept(monkeypatch):
    monkeypatch.setattr(host_memory, 'supported', lambda: True)
    assert host_memory.environment({})['GLIBC_TUNABLES'] == host_memory.TUNABLE
    env = host_memory.environment({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'})
    assert env['GLIBC_TUNABLES'] == f'glibc.malloc.arena_max=2:{host_memory.TUNABLE}'
    chosen = {'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}  # a user's own choice wins
    assert host_memory.environment(chosen) == chosen


def test_switched_off_or_unsupported(monkeypatch):
    monkeypatch.setenv('GSVIT_HUGE_PAGES', '0')
    assert not host_memory.supported()
    assert 'GLIBC_TUNABLES' not in host_memory.environment({})


def entry_point(tmp_path, last_line: str):
    """An entry-point script that restarts first thing, then prints `last_line` (Python)."""
    if not host_memory.supported():
        pytest.skip('no glibc 2.35+ with transparent huge pages here')
    script = tmp_path / 'entry.py'
    script.write_text('import os, sys\n'
                      'print("start", flush=True)\n'
                      'from gsvit_jax.host_memory import reexec_with_huge_pages\n'
                      'reexec_with_huge_pages()\n'
                      f'{last_line}\n')
    return script


def run_clean(argv: list[str]) -> list[str]:
    """stdout lines of `python argv...` started without the tunable or the switch."""
    env = {k: v for k, v in os.environ.items() if k not in ('GLIBC_TUNABLES', 'GSVIT_HUGE_PAGES')}
    return subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True,
                          check=True).stdout.splitlines()


def test_reexec_restarts_the_same_command_once(tmp_path):
    script = entry_point(tmp_path, 'print(os.environ["GLIBC_TUNABLES"], sys.argv[1:])')
    lines = run_clean([str(script), '--flag=1'])
    assert lines[:2] == ['start', 'start']  # ran twice: before and after the restart, not more
    assert lines[2].startswith(f"{host_memory.TUNABLE} ['--flag=1']")
    assert len(lines) == 3


def test_no_restart_when_run_inside_another_program(tmp_path):
    """Run by runpy (as the tests' fork runner runs entry points) the command line is the host's:
    restarting it would run the host again."""
    script = entry_point(tmp_path, 'print("tunables", os.environ.get("GLIBC_TUNABLES"))')
    host = ('import runpy, sys\n'
            'print("host", flush=True)\n'
            f'sys.argv = [{str(script)!r}, "--flag"]\n'
            f'runpy.run_path({str(script)!r}, run_name="__main__")\n')
    assert run_clean(['-c', host]) == ['host', 'start', 'tunables None']
