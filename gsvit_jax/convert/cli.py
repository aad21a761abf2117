"""`gsvit-convert` (`python -m gsvit_jax.convert`): Orbax checkpoints <-> PyTorch weight files.

- `to-torch CHECKPOINT OUT`: a training workdir (or a `from-torch` output) -> a PyTorch state_dict
  (`.pth`/`.pt`/`.pkl`/`.bin` via torch.save, or `.safetensors`) in the gsvit, msra or timm layout.
- `from-torch WEIGHTS OUTDIR`: GSViT.pkl, an ImageNet `efficientvit_m*.pth`, a timm file or any
  `to-torch` output -> an Orbax checkpoint (item `variables`, step 0) for
  `--config.init_from=OUTDIR`.

The model to rebuild (variant, input size, decoder widths) is read off the tensor shapes. User
errors print one line and exit 1; a state_dict that does not fit the model lists every difference
and exits 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import pathlib
import shutil
import sys
import tempfile
from typing import Any, Mapping, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

from gsvit_jax.convert.files import TORCH_SAVE_SUFFIXES, load_torch_file, save_torch_file
from gsvit_jax.convert.keys import LAYOUTS, detect_layout, to_layout
from gsvit_jax.convert.state_dict import (COLLECTIONS, StateDictMismatchError, abstract_variables,
                                          from_torch, to_torch, unwrap_checkpoint)
from gsvit_jax.models.decoder import gsvit_autoencoder
from gsvit_jax.models.efficientvit import VARIANTS, EfficientViT, efficientvit, stage_resolutions

PROG = 'gsvit-convert'
ITEMS = ('variables', 'state')  # from-torch outputs, training checkpoints
WEIGHT_SUFFIXES = TORCH_SAVE_SUFFIXES + ('.safetensors',)
HEAD_PREFIX = 'head.'
MAX_IMG_SIZE = 1024
# msra keys whose output channels are the three stage widths, which tell M0...M5 apart
_STAGE_WIDTH_KEYS = ('patch_embed.6.c.weight', 'blocks2.1.conv3.c.weight',
                     'blocks3.1.conv3.c.weight')


class ConvertError(Exception):
    """A mistake in the command line or its inputs: reported as one line, exit status 1."""


# ----------------------------------------------------------------------------------------------
# Orbax side
# ----------------------------------------------------------------------------------------------
def checkpoint_directory(path: pathlib.Path) -> pathlib.Path:
    """The CheckpointManager root: `<workdir>/checkpoints`, else `path` (a from-torch output)."""
    if not path.exists():
        raise ConvertError(f'no checkpoint at {path}')
    if not path.is_dir():
        raise ConvertError(f'{path} is a file; expected a checkpoint directory (a training '
                           'workdir, its checkpoints/ folder or a from-torch output)')
    return path / 'checkpoints' if (path / 'checkpoints').is_dir() else path


def read_variables(path: str | pathlib.Path, step: int | None = None) -> tuple[dict[str, Any], int]:
    """{'params', 'batch_stats'} as numpy arrays from `step` (default: the newest) of a checkpoint,
    and that step. Training states are restored partially: the optimizer state is never read."""
    directory = checkpoint_directory(pathlib.Path(path).absolute())
    handlers = {name: ocp.PyTreeCheckpointHandler() for name in ITEMS}
    with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True),
                               item_handlers=handlers) as manager:
        steps = sorted(manager.all_steps())
        if not steps:
            raise ConvertError(f'no checkpoint steps under {directory}; give a training workdir, '
                               'its checkpoints/ folder or a from-torch output (and --step N)')
        step = steps[-1] if step is None else step
        if step not in steps:
            raise ConvertError(f'no step {step} under {directory}; steps: {steps}')
        metadata = manager.item_metadata(step)
        name = next((n for n in ITEMS if metadata.get(n) is not None), None)
        tree = metadata[name].tree if name else {}
        if 'params' not in tree:
            raise ConvertError(f'step {step} under {directory} holds no model variables '
                               f'(expected an item {" or ".join(ITEMS)} with params)')
        wanted = {c: tree[c] for c in COLLECTIONS if c in tree}
        target = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), wanted)
        restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                                              wanted)
        item = ocp.args.PyTreeRestore(target, restore_args, partial_restore=True)
        restored = manager.restore(step, args=ocp.args.Composite(**{name: item}))
    return dict(restored[name]), step


def write_variables(variables: Mapping[str, Any], outdir: pathlib.Path) -> None:
    """Orbax checkpoint of `variables` (item `variables`, step 0) at `outdir`, replacing it.

    Written into a temporary folder beside `outdir` and renamed into place when complete.
    """
    outdir.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(dir=outdir.parent, prefix=f'.{outdir.name}.'))
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would make the output private
        options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
        with ocp.CheckpointManager(staging, options=options, item_names=('variables',)) as manager:
            manager.save(0, args=ocp.args.Composite(variables=ocp.args.StandardSave(variables)))
        if outdir.exists():
            shutil.rmtree(outdir)
        staging.rename(outdir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def count_parameters(variables: Mapping[str, Any]) -> int:
    return sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(variables.get('params', {})))


# ----------------------------------------------------------------------------------------------
# to-torch
# ----------------------------------------------------------------------------------------------
def select_variables(variables: Mapping[str, Any], layout: str,
                     encoder_only: bool) -> tuple[dict[str, Any], str]:
    """The variables to export and what they are: the whole autoencoder only in the gsvit layout
    without `encoder_only`; otherwise the encoder alone (msra and timm have no decoder)."""
    params = variables['params']
    if 'evit' not in params and 'patch_embed' not in params:
        raise ConvertError(f'the checkpoint holds no EfficientViT encoder (top-level params: '
                           f'{sorted(params)})')
    if layout == 'gsvit' and not encoder_only and 'decoder' in params:
        return dict(variables), 'autoencoder'
    encoder = {c: tree['evit'] for c, tree in variables.items()} if 'evit' in params else variables
    if layout == 'gsvit' and 'head' in encoder['params']:
        raise ConvertError('the checkpoint has a classifier head, which the gsvit layout cannot '
                           'hold; use --layout msra or timm')
    return dict(encoder), 'encoder'


def check_output_file(out: pathlib.Path, overwrite: bool) -> None:
    if out.suffix not in WEIGHT_SUFFIXES:
        raise ConvertError(f'{out}: unknown weights file type {out.suffix!r}; use one of '
                           f'{", ".join(WEIGHT_SUFFIXES)}')
    if out.is_dir():
        raise ConvertError(f'{out} is a directory; give a file name')
    if out.exists() and not overwrite:
        raise ConvertError(f'{out} exists; pass --overwrite to replace it')


def to_torch_command(args: argparse.Namespace) -> None:
    out = pathlib.Path(args.out)
    check_output_file(out, args.overwrite)
    variables, step = read_variables(args.checkpoint, args.step)
    selected, kind = select_variables(variables, args.layout, args.encoder_only)
    state_dict = to_torch(selected, args.layout)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_torch_file(state_dict, out)
    print(f'{args.checkpoint} (step {step}) -> {out}: {kind}, {args.layout} layout, '
          f'{len(state_dict)} tensors, {count_parameters(selected):,} parameters')


# ----------------------------------------------------------------------------------------------
# from-torch
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The Flax model a state_dict fits: EfficientViT variant, input size, decoder widths if any."""

    variant: str
    img_size: int
    decoder_widths: tuple[int, ...] | None = None

    def build(self) -> Any:
        if self.decoder_widths is None:
            return efficientvit(self.variant, num_classes=0, img_size=self.img_size)
        return gsvit_autoencoder(self.variant, self.img_size, self.decoder_widths)

    def describe(self) -> str:
        if self.decoder_widths is None:
            return f'EfficientViT-{self.variant.upper()} encoder at {self.img_size}px'
        return (f'GSViT autoencoder (EfficientViT-{self.variant.upper()} at {self.img_size}px, '
                f'decoder widths {self.decoder_widths})')


def read_state_dict(path: str | pathlib.Path) -> dict[str, Any]:
    """The flat state_dict of a weights file: unwrapped from `model`/`state_dict`, no `module.`."""
    loaded = load_torch_file(path)
    if not isinstance(loaded, Mapping):
        raise ConvertError(f'{path} holds a {type(loaded).__name__}, not a state_dict')
    state_dict = dict(unwrap_checkpoint(loaded))
    if state_dict and all(k.startswith('module.') for k in state_dict):  # saved from DataParallel
        state_dict = {k[len('module.'):]: v for k, v in state_dict.items()}
    return state_dict


def resolve_layout(state_dict: Mapping[str, Any], requested: str) -> str:
    """`auto`: the detected layout; an explicit layout must not contradict the keys."""
    try:
        detected = detect_layout(list(state_dict))
    except ValueError:
        if requested == 'auto':
            raise
        return requested
    if requested not in ('auto', detected):
        raise ConvertError(f'the file has {detected}-layout keys, not {requested}; '
                           'leave --layout at auto')
    return detected


def _shape(state_dict: Mapping[str, Any], key: str, option: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise ConvertError(f'cannot infer the model: no {key!r} in the state_dict; pass {option}')
    return tuple(state_dict[key].shape)


def infer_variant(state_dict: Mapping[str, Any], layout: str) -> str:
    """M0...M5 from the three stage widths (unique per variant)."""
    widths = tuple(_shape(state_dict, to_layout(key, layout), '--variant')[0]
                   for key in _STAGE_WIDTH_KEYS)
    for name, variant in VARIANTS.items():
        if variant.embed_dim == widths:
            return name
    raise ConvertError(f'stage widths {widths} match no EfficientViT variant '
                       f'({", ".join(sorted(VARIANTS))})')


def infer_encoder_img_size(state_dict: Mapping[str, Any], layout: str) -> int:
    """The smallest multiple of 32 whose attention windows match the bias tables' sizes.

    Encoder weights depend on the input size only through these tables, so every size that
    fits them gives the same variables (GSViT/ImageNet: 224).
    """
    sides = []
    for stage in (1, 2, 3):
        first_block = 0 if stage == 1 else 3  # stages 2 and 3 start with the subsample modules
        key = to_layout(f'blocks{stage}.{first_block}.mixer.m.attn.attention_biases', layout)
        sides.append(math.isqrt(_shape(state_dict, key, '--img-size')[1]))
    windows = EfficientViT.window_size
    for size in range(32, MAX_IMG_SIZE + 1, 32):
        if [min(w, r) for w, r in zip(windows, stage_resolutions(size))] == sides:
            return size
    raise ConvertError(f'attention-bias tables of sides {sides} fit no input size up to '
                       f'{MAX_IMG_SIZE}; pass --img-size')


def infer_decoder(state_dict: Mapping[str, Any]) -> tuple[tuple[int, ...], int]:
    """Decoder widths and the image size: conv1 is (w0, w1, 4, 4), conv2-4 (w_i-1, w_i, 4, 4), and
    the fc layer has base^2 * w0 outputs for a 32 * base image."""
    widths = [_shape(state_dict, 'decoder.conv1.weight', '--img-size')[0]]
    widths += [_shape(state_dict, f'decoder.conv{i}.weight', '--img-size')[1] for i in range(1, 5)]
    units = _shape(state_dict, 'decoder.fc.weight', '--img-size')[0]
    base = math.isqrt(units // widths[0])
    if base * base * widths[0] != units:
        raise ConvertError(f'decoder.fc has {units} outputs, not base^2 x {widths[0]}')
    return tuple(widths), 32 * base


def infer_model(state_dict: Mapping[str, Any], layout: str, variant: str | None = None,
                img_size: int | None = None) -> ModelSpec:
    """The model of a state_dict; `variant`/`img_size` override what the shapes say."""
    variant = variant or infer_variant(state_dict, layout)
    if any(k.startswith('decoder.') for k in state_dict):
        widths, decoder_size = infer_decoder(state_dict)
        return ModelSpec(variant, img_size or decoder_size, widths)
    return ModelSpec(variant, img_size or infer_encoder_img_size(state_dict, layout))


def check_output_dir(outdir: pathlib.Path, overwrite: bool) -> None:
    if outdir.is_file():
        raise ConvertError(f'{outdir} is a file; give a directory')
    if outdir.is_dir() and any(outdir.iterdir()) and not overwrite:
        raise ConvertError(f'{outdir} is not empty; pass --overwrite to replace it')


def from_torch_command(args: argparse.Namespace) -> None:
    outdir = pathlib.Path(args.outdir).absolute()
    check_output_dir(outdir, args.overwrite)
    state_dict = read_state_dict(args.weights)
    layout = resolve_layout(state_dict, args.layout)
    head = [k for k in state_dict if k.startswith(HEAD_PREFIX)]
    if head:
        print(f'dropping the classifier head: {len(head)} tensors {HEAD_PREFIX}* '
              '(the GSViT encoder has none)')
    spec = infer_model(state_dict, layout, None if args.variant == 'auto' else args.variant,
                       args.img_size)
    variables = from_torch(state_dict, abstract_variables(spec.build()), layout=layout,
                           drop_prefixes=(HEAD_PREFIX,))
    write_variables(variables, outdir)
    print(f'{args.weights} ({layout} layout, {len(state_dict) - len(head)} tensors) -> {outdir}: '
          f'{spec.describe()}, {count_parameters(variables):,} parameters')
    print(f'train from it with --config.init_from={outdir}')


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description='Convert GSViT weights between Orbax checkpoints and PyTorch files.')
    commands = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

    to = commands.add_parser(
        'to-torch', help='Orbax checkpoint -> PyTorch state_dict file',
        description='Write the params and BatchNorm statistics of a checkpoint as a PyTorch '
                    'state_dict (the optimizer state is not read).')
    to.add_argument('checkpoint', metavar='CHECKPOINT',
                    help='training workdir, its checkpoints/ folder, or a from-torch output')
    to.add_argument('out', metavar='OUT', help=f'output file: {", ".join(WEIGHT_SUFFIXES)} '
                                               '(.safetensors: safetensors, else torch.save)')
    to.add_argument('--layout', choices=LAYOUTS, default='gsvit',
                    help='key names: gsvit = the original GSViT.pkl (evit.*, decoder.*; loads '
                         'strictly into the original autoencoder); msra = Microsoft EfficientViT; '
                         'timm = timm efficientvit_m*. msra and timm have no decoder, so they '
                         'write the encoder only. Default: %(default)s')
    to.add_argument('--encoder-only', action='store_true',
                    help='write only the encoder (evit.* in the gsvit layout)')
    to.add_argument('--step', type=int, help='checkpoint step (default: the newest)')
    to.add_argument('--overwrite', action='store_true', help='replace OUT if it exists')
    to.set_defaults(run=to_torch_command)

    frm = commands.add_parser('from-torch', help='PyTorch weights file -> Orbax checkpoint',
                              description='Convert GSViT.pkl, an ImageNet efficientvit_m*.pth '
                                          '(weights under "model"), a timm file or a .safetensors '
                                          'file into an Orbax checkpoint that --config.init_from '
                                          'accepts. ImageNet/timm classifier heads are dropped.')
    frm.add_argument('weights', metavar='WEIGHTS', help='.pth/.pt/.pkl/.bin/.safetensors file')
    frm.add_argument('outdir', metavar='OUTDIR', help='output checkpoint directory')
    frm.add_argument('--layout', choices=('auto',) + LAYOUTS, default='auto',
                     help='key names of WEIGHTS (default: detected from the keys)')
    frm.add_argument('--variant', choices=('auto',) + tuple(sorted(VARIANTS)), default='auto',
                     help='EfficientViT variant (default: from the stage widths; GSViT is m5)')
    frm.add_argument('--img-size', type=int,
                     help='input size (default: from the decoder, or the smallest that fits the '
                          'attention-bias tables; 224 for GSViT and ImageNet weights)')
    frm.add_argument('--overwrite', action='store_true', help='replace a non-empty OUTDIR')
    frm.set_defaults(run=from_torch_command)
    return parser


def _error(message: str) -> None:
    print(f'{PROG}: error: {message}', file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 user error, 2 state_dict mismatch)."""
    args = build_parser().parse_args(argv)
    logging.getLogger('absl').setLevel(logging.ERROR)  # Orbax's informational warnings
    try:
        args.run(args)
    except StateDictMismatchError as e:
        _error(str(e))
        return 2
    except (ConvertError, FileNotFoundError, ValueError, ImportError) as e:
        _error(str(e).splitlines()[0])
        return 1
    return 0
