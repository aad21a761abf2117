"""Shared benchmark helpers: machine description and updating a section of RESULTS.md in place."""
from __future__ import annotations

import os
import pathlib
import platform
import re

from gsvit_jax.atomic import write_text_atomic

RESULTS = pathlib.Path(__file__).with_name('RESULTS.md')


def machine_description() -> str:
    """CPU model and core count, plus the JAX accelerator if there is one."""
    import jax
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    device = jax.devices()[0]
    accel = '' if device.platform == 'cpu' else f', {device.device_kind} ({device.platform})'
    return f'{cpu}, {os.cpu_count()} cores{accel}'


def backend_name() -> str:
    """`cpu`, or `gpu <device kind>`: which RESULTS.md section a measurement belongs to."""
    import jax
    device = jax.devices()[0]
    return 'cpu' if device.platform == 'cpu' else f'gpu {device.device_kind}'


def update_section(name: str, markdown: str, path: pathlib.Path = RESULTS) -> None:
    """Replace (or append) the section delimited by `<!-- begin NAME -->` / `<!-- end NAME -->`."""
    begin, end = f'<!-- begin {name} -->', f'<!-- end {name} -->'
    text = path.read_text() if path.exists() else '# Benchmark results\n'
    block = f'{begin}\n{markdown.strip()}\n{end}'
    pattern = re.compile(re.escape(begin) + '.*?' + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f'{text.rstrip()}\n\n{block}\n'
    write_text_atomic(path, text)  # an interrupted run never leaves a half-written file


def load_average() -> str:
    """1, 5 and 15-minute load averages: how busy the machine was during a measurement."""
    return ', '.join(f'{x:.2f}' for x in os.getloadavg())


def code_version() -> str:
    """Short HEAD commit, plus the library files with uncommitted changes (read-only git); where
    there is no git checkout (a copied tree), `$GSVIT_CODE_VERSION` if set."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=root, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--', 'gsvit_jax', 'tfds_builders'],
                               cwd=root, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):  # a copy without .git: named by the caller
        named = os.environ.get('GSVIT_CODE_VERSION')
        return f'`{named}`' if named else 'unknown'
    changed = [line[3:] for line in dirty.splitlines() if line.strip()]
    return f'`{head}`' + (f' + uncommitted {", ".join(changed)}' if changed else '')
