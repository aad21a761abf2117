"""Parse the `path.py:arg` part of `--config=` (big_vision style): `demo`, `variant=m0,runlocal`,
and check that the config file exists before absl/ml_collections parse the flags."""
from __future__ import annotations

import pathlib
import sys
from typing import Any, Sequence

from ml_collections import ConfigDict


def parse_arg(arg: str | None, **defaults: Any) -> ConfigDict:
    """`'a=1,flag'` -> ConfigDict(a=1, flag=True), typed like `defaults` (unknown keys refused)."""
    result = ConfigDict(defaults)
    for item in filter(None, (arg or '').split(',')):
        key, sep, value = item.partition('=')
        key = key.strip()
        if key not in defaults:
            raise ValueError(f'unknown config argument {key!r}; expected one of {sorted(defaults)}')
        default = defaults[key]
        if not sep:
            result[key] = True
        elif isinstance(default, bool):
            result[key] = value.lower() in ('1', 'true', 'yes')
        else:
            result[key] = type(default)(value) if default is not None else value
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
