"""Parse the `path.py:arg` part of `--config=` (big_vision style): `demo`, `variant=m0,runlocal`."""
from __future__ import annotations

from typing import Any

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
