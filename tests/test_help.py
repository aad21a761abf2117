"""Every entry point's --help shows its whole description: no text cut off mid-sentence, no
shell line continuation folded into one line."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

from gsvit_jax.convert.cli import build_parser as convert_parser
from gsvit_jax.phase.cli import build_parser as phase_parser
from xla_env import xla_flags

ROOT = pathlib.Path(__file__).parents[1]
EXPERIMENTS = ('pretrain', 'train_phase', 'eval_phase', 'encode_demo')


def complete(text: str) -> bool:
    """Ends like a sentence, and no command's continued line was folded into it (a backslash
    before a newline in a docstring that is not raw joins the lines)."""
    text = text.strip()
    return text.endswith(('.', ')')) and not re.search(r'\S {3,}--', text)


def help_of(module: str, *args: str) -> str:
    result = subprocess.run([sys.executable, '-m', module, *args, '--help'], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.parametrize('module, args, description', [
    ('gsvit_jax.phase', (), 'Cholec80 surgical phase of every second of a video'),
    ('gsvit_jax.phase', ('predict',), 'Per-second phases of each video'),
    ('tfds_builders.build', (), 'both                    both files, one dataset'),
    ('tfds_builders.gensurgery.download', (), 'Needs the `download` extra'),
])
def test_argparse_commands_show_their_whole_description(module, args, description):
    assert description in help_of(module, *args)


def test_descriptions_are_complete():
    import tfds_builders.build
    import tfds_builders.gensurgery.download
    for doc in (phase_parser().description, tfds_builders.build.__doc__,
                tfds_builders.gensurgery.download.__doc__, convert_parser().description):
        assert complete(doc), doc


def test_experiment_scripts_show_their_docstring():
    env = {**os.environ, 'XLA_FLAGS': xla_flags(1)}
    runs = {name: subprocess.Popen([sys.executable, str(ROOT / 'experiments' / f'{name}.py'),
                                    '--help'], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env=env)
            for name in EXPERIMENTS}  # started together: each spends seconds importing JAX
    docs = {}
    for name, process in runs.items():
        out, err = process.communicate(timeout=180)
        assert '\nflags:\n' in out, err[-2000:]  # absl's --help exits with status 1
        docs[name] = out.split('\nflags:\n')[0]
        assert complete(docs[name]), f'{name}: {docs[name]}'
    assert '--config=experiments/configs/pretrain.py:demo --workdir=' in docs['pretrain']
