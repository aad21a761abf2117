"""Checks of a training config, run before any data, device or workdir is touched: each failure
is a `UserError` naming the field, what it holds and what was expected."""
from __future__ import annotations

import pathlib
from typing import Any, Callable, Iterable, Sequence

from ml_collections import ConfigDict

from gsvit_jax.errors import UserError

WEIGHT_SUFFIXES = ('.pth', '.pt', '.pkl', '.bin', '.safetensors')
OPTIMIZERS = ('adam', 'adamw')
SCHEDULES = ('linear', 'warmup_cosine', 'exponential', 'constant')
COMPUTE_DTYPES = ('float32', 'bfloat16')


def field(config: ConfigDict, name: str) -> Any:
    """`config['a.b.c']` for a dotted name."""
    value = config
    for part in name.split('.'):
        value = value[part]
    return value


def _number(config: ConfigDict, name: str) -> float:
    value = field(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f'{name}={value!r}: expected a number')
    return value


def positive(config: ConfigDict, *names: str) -> None:
    for name in names:
        value = _number(config, name)
        if not value > 0:  # also refuses NaN
            raise UserError(f'{name}={value}: expected a positive number')


def non_negative(config: ConfigDict, *names: str) -> None:
    for name in names:
        value = _number(config, name)
        if not value >= 0:
            raise UserError(f'{name}={value}: expected 0 or more')


def one_of(config: ConfigDict, name: str, choices: Iterable[Any]) -> None:
    value, choices = field(config, name), tuple(choices)
    if value not in choices:
        raise UserError(f'{name}={value!r}: expected one of {", ".join(map(repr, choices))}')


def check_variant(config: ConfigDict, name: str) -> None:
    from gsvit_jax.models.efficientvit import VARIANTS
    one_of(config, name, sorted(VARIANTS))


def check_weights_path(config: ConfigDict, name: str) -> None:
    """An `init_from` that is set names PyTorch weights or an Orbax checkpoint that exists."""
    value = field(config, name)
    if not value:
        return
    path = pathlib.Path(value)
    expected = (f'expected PyTorch weights ({", ".join(WEIGHT_SUFFIXES)}) or an Orbax checkpoint '
                'directory (a training workdir or a gsvit-convert from-torch output)')
    if not path.exists():
        raise UserError(f'{name}={value!r}: no such file or directory; {expected}')
    if path.is_file():
        if path.suffix not in WEIGHT_SUFFIXES:
            raise UserError(f'{name}={value!r} is not a weights file (suffix '
                            f'{path.suffix or "none"!r}); {expected}')
        if path.stat().st_size == 0:
            raise UserError(f'{name}={value!r} is empty; {expected}')
        return
    root = path / 'checkpoints' if (path / 'checkpoints').is_dir() else path
    if not any(p.is_dir() and p.name.isdigit() for p in root.iterdir()):
        raise UserError(f'{name}={value!r}: no checkpoint in this directory; {expected}')


def check_optimizer(config: ConfigDict, prefix: str = 'optimizer') -> None:
    one_of(config, f'{prefix}.name', OPTIMIZERS)
    one_of(config, f'{prefix}.schedule', SCHEDULES)
    positive(config, f'{prefix}.lr')
    non_negative(config, f'{prefix}.end_lr', f'{prefix}.eps', f'{prefix}.grad_clip',
                 f'{prefix}.weight_decay', f'{prefix}.warmup_steps', f'{prefix}.decay_steps')
    for beta in ('b1', 'b2'):
        value = _number(config, f'{prefix}.{beta}')
        if not 0 <= value < 1:
            raise UserError(f'{prefix}.{beta}={value}: expected a number in [0, 1)')


def check_checkpointing(config: ConfigDict) -> None:
    positive(config, 'checkpoint.every_steps', 'checkpoint.keep')


def check_workdir(workdir: str | pathlib.Path) -> None:
    path = pathlib.Path(workdir)
    if path.exists() and not path.is_dir():
        raise UserError(f'--workdir={workdir}: is a file; expected a directory (new or a run '
                        'to resume)')


def has_checkpoint(workdir: str | pathlib.Path) -> bool:
    """A run to resume: `<workdir>/checkpoints` holds a complete step."""
    directory = pathlib.Path(workdir) / 'checkpoints'
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def check_pretrain_config(config: ConfigDict, workdir: str | pathlib.Path) -> None:
    """Everything `gsvit_jax.pretrain.train_and_evaluate` reads, checked up front."""
    check_workdir(workdir)
    check_variant(config, 'model.variant')
    positive(config, 'model.img_size', 'batch_size', 'total_steps', 'log_every_steps',
             'image_every_steps', 'eval_every_steps', 'eval_batches', 'data.gap_s',
             'data.image_size')
    if config.model.img_size % 32:
        raise UserError(f'model.img_size={config.model.img_size}: expected a multiple of 32 '
                        '(the decoder upsamples 32x back to the input size; 224 as released)')
    non_negative(config, 'data.worker_count', 'data.max_corrupt_records')
    one_of(config, 'compute_dtype', COMPUTE_DTYPES)
    one_of(config, 'loss', ('l1', 'mse'))
    check_optimizer(config)
    check_checkpointing(config)
    if not has_checkpoint(workdir):  # a resumed run does not read init_from again
        check_weights_path(config, 'init_from')


def check_phase_config(config: ConfigDict, workdir: str | pathlib.Path) -> None:
    """Everything `gsvit_jax.phase.train.train_and_evaluate` reads, checked up front."""
    check_workdir(workdir)
    check_variant(config, 'encoder.variant')
    check_weights_path(config, 'encoder.init_from')  # read on resume too (the frozen encoder)
    one_of(config, 'head.kind', ('mlp', 'temporal'))
    one_of(config, 'features.mode', ('cached', 'augmented'))
    one_of(config, 'features.dtype', ('float16', 'float32'))
    positive(config, 'batch_size', 'temporal_batch_videos', 'epochs', 'log_every_steps',
             'eval_every_epochs', 'features.batch_size', 'data.image_size')
    non_negative(config, 'data.worker_count')
    dropout = _number(config, 'head.dropout')
    if not 0 <= dropout < 1:
        raise UserError(f'head.dropout={dropout}: expected a number in [0, 1)')
    check_optimizer(config)
    check_checkpointing(config)


# Pre-training fields read in one mode only: (prefix, whether this config reads it, the mode).
PRETRAIN_MODE_FIELDS = (
    ('data.synthetic_', lambda c: c.data.name == 'synthetic', "data.name='synthetic' (:runlocal)"),
)  # (the demo's own fields exist only in the :demo config: elsewhere they are unknown fields)


def refuse_ignored_overrides(config: ConfigDict, argv: Sequence[str],
                             rules: Sequence[tuple[str, Callable[[ConfigDict], bool], str]]
                             ) -> None:
    """A `--config.FIELD=...` override that this config never reads is an error, not silence."""
    for arg in argv:
        if not arg.startswith('--config.'):
            continue
        name = arg[len('--config.'):].split('=')[0]
        for prefix, read, mode in rules:
            if name.startswith(prefix) and not read(config):
                raise UserError(f'--config.{name} is not read by this config, only with {mode}: '
                                'drop it, or choose that mode')
