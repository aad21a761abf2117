"""Shared benchmark helpers: machine description and updating a section of RESULTS.md in place."""
from __future__ import annotations

import os
import pathlib
import platform
import re
import tempfile

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


def update_section(name: str, markdown: str, path: pathlib.Path = RESULTS) -> None:
    """Replace (or append) the section delimited by `<!-- begin NAME -->` / `<!-- end NAME -->`."""
    begin, end = f'<!-- begin {name} -->', f'<!-- end {name} -->'
    text = path.read_text() if path.exists() else '# Benchmark results\n'
    block = f'{begin}\n{markdown.strip()}\n{end}'
    pattern = re.compile(re.escape(begin) + '.*?' + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f'{text.rstrip()}\n\n{block}\n'
    with tempfile.NamedTemporaryFile('w', dir=path.parent, delete=False) as f:
        f.write(text)
    os.replace(f.name, path)  # atomic: an interrupted run never leaves a half-written file
