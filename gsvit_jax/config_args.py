"""Parse the `path.py:arg` part of `--config=` (big_vision style): `demo`, `variant=m0,runlocal`,
and run an experiment script so that mistakes in its flags and config (a missing config file, an
unknown field or value) end in one line with exit status 2, like every other user error."""
from __future__ import annotations

import gc
import pathlib
import re
import sys
from typing import Any, Callable, Sequence

from ml_collections import ConfigDict

from gsvit_jax.errors import UserError, debug_requested, exit_with


def parse_arg(arg: str | None, choices: dict[str, Sequence[Any]] | None = None,
              **defaults: Any) -> ConfigDict:
    """`'a=1,flag'` -> ConfigDict(a=1, flag=True), typed like `defaults`; unknown keys, and values
    outside `choices[key]`, are refused."""
    result = ConfigDict(defaults)
    for item in filter(None, (arg or '').split(',')):
        key, sep, value = item.partition('=')
        key = key.strip()
        if key not in defaults:
            raise UserError(f'--config=...:{item}: unknown config argument {key!r}; expected '
                            f'{", ".join(sorted(defaults))}')
        default = defaults[key]
        if not sep:
            result[key] = True
        elif isinstance(default, bool):
            result[key] = value.lower() in ('1', 'true', 'yes')
        else:
            try:
                result[key] = type(default)(value) if default is not None else value
            except ValueError:
                raise UserError(f'--config=...:{item}: expected a {type(default).__name__} '
                                f'value for {key!r}') from None
        if choices and key in choices and result[key] not in choices[key]:
            raise UserError(f'--config=...:{item}: expected {key}= one of '
                            f'{", ".join(map(str, choices[key]))}')
    return result


def config_file(argv: Sequence[str]) -> str | None:
    """The file part of `--config=path.py[:arg]` (or `--config path.py[:arg]`) in `argv`."""
    for i, item in enumerate(argv):
        if item.startswith('--config='):
            value = item[len('--config='):]
        elif item == '--config' and i + 1 < len(argv):
            value = argv[i + 1]
        else:
            continue
        return value.split(':', 1)[0]
    return None


def exit_if_config_file_missing(prog: str, argv: Sequence[str] | None = None) -> None:
    """One line and exit status 2 when `--config` names no file (ml_collections would print a
    multi-line error and exit 1)."""
    path = config_file(sys.argv[1:] if argv is None else argv)
    if path is not None and not pathlib.Path(path).is_file():
        print(f'{prog}: error: --config: no such file {path} (expected a config such as '
              'experiments/configs/pretrain.py[:demo])', file=sys.stderr)
        sys.exit(2)


def run_app(prog: str, main: Callable[[list[str]], None]) -> None:
    """`absl.app.run(main)`, with errors in the flags and in the config (its file, its arguments,
    an override of a field it lacks) reported as `prog: error: ...` and exit status 2.
    `--debug` or GSVIT_JAX_DEBUG=1 shows the traceback instead."""
    from absl import app, flags
    exit_if_config_file_missing(prog)
    collect_garbage_rarely()

    def parse(argv: list[str]) -> list[str]:
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            error = UserError(str(e))
        except UserError as e:
            error = e
        except AttributeError as e:  # ml_collections: `--config.x=...` for a field it lacks
            error = UserError(_unknown_field(str(e), argv))
        if debug_requested('--debug' in argv):
            raise error
        exit_with(prog, error)

    app.run(main, flags_parser=parse)


def collect_garbage_rarely() -> None:
    """Tracing a training step makes hundreds of thousands of short-lived Python objects, and the
    collector's default thresholds rescan them and every imported module's objects again and
    again: ~15% of a training process's start (measured on the runlocal step: tracing 4.2 -> 3.5
    s, imports 3.1 -> 2.4 s). Objects alive now are frozen out of the scans, and full scans are
    rarer; reference counting still frees everything that is not in a cycle at once."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def _unknown_field(message: str, argv: Sequence[str]) -> str:
    """ml_collections' "'x'\nDid you mean "y" instead of "x"?" -> one line naming the flag."""
    key = re.search(r'\w+', message)  # the field: its first word
    key = key.group(0) if key else message.strip()
    flag = next((a.split('=')[0] for a in argv if a.startswith('--config.') and key in a), key)
    hint = re.search(r'Did you mean "([^"]+)"', message)
    return (f'{flag}: the config has no field {key!r}'
            + (f' (did you mean {hint.group(1)!r}?)' if hint else ''))
