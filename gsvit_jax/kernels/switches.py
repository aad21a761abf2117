"""The CPU kernels' environment switch `GSVIT_CONV_IMPL`, checked without importing JAX: every
entry point checks it before any slow work (`errors.run_reporting_errors`)."""
from __future__ import annotations

import os

from gsvit_jax.errors import UserError

CONV_IMPL_ENV = 'GSVIT_CONV_IMPL'
CONV_IMPLS = ('auto', 'xla', 'onednn')


def check_conv_impl(value: str) -> None:
    """A `UserError` unless `value` is auto, xla or onednn."""
    if value not in CONV_IMPLS:
        raise UserError(f'{CONV_IMPL_ENV} (gsvit_jax.kernels.onednn.CONV_IMPL) must be auto, xla '
                        f'or onednn, got {value!r}')


def check_environment() -> None:
    check_conv_impl(os.environ.get(CONV_IMPL_ENV, 'auto'))
