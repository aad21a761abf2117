"""`gsvit-convert` (`python -m gsvit_jax.convert`): Orbax checkpoints <-> PyTorch weight files.

- `to-torch CHECKPOINT OUT`: a training workdir (or a `from-torch` output) -> a PyTorch state_dict
  (`.pth`/`.pt`/`.pkl`/`.bin` via torch.save, or `.safetensors`) in the gsvit, msra or timm layout.
- `from-torch WEIGHTS OUTDIR`: GSViT.pkl, an ImageNet `efficientvit_m*.pth`, a timm file or any
  `to-torch` output -> an Orbax checkpoint (item `variables`, step 0) for
  `--config.init_from=OUTDIR`.

The model to rebuild (variant, input size, decoder widths) is read off the tensor shapes. User
errors print one line (a state_dict that does not fit the model: every difference) and exit with
status 2; `--debug` (or GSVIT_JAX_DEBUG=1) shows the traceback instead.
"""
from __future__ import annotations

import argparse
import logging
import pathlib
import sys
from typing import Sequence

from gsvit_jax.convert.checkpoints import count_parameters, read_variables, write_variables
from gsvit_jax.convert.files import TORCH_SAVE_SUFFIXES, save_torch_file
from gsvit_jax.convert.infer import infer_model, read_state_dict, resolve_layout
from gsvit_jax.convert.keys import LAYOUTS
from gsvit_jax.convert.state_dict import (ConvertError, StateDictMismatchError, abstract_variables,
                                          from_torch, select_variables, to_torch)
from gsvit_jax.errors import debug_requested
from gsvit_jax.models.efficientvit import VARIANTS

PROG = 'gsvit-convert'
WEIGHT_SUFFIXES = TORCH_SAVE_SUFFIXES + ('.safetensors',)
HEAD_PREFIX = 'head.'


# ----------------------------------------------------------------------------------------------
# to-torch
# ----------------------------------------------------------------------------------------------
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
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--debug', action='store_true',
                        help='show the traceback of a user error (also GSVIT_JAX_DEBUG=1)')
    commands = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

    to = commands.add_parser(
        'to-torch', parents=[common], help='Orbax checkpoint -> PyTorch state_dict file',
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

    frm = commands.add_parser('from-torch', parents=[common],
                              help='PyTorch weights file -> Orbax checkpoint',
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
    """Run the command line; returns the exit status (0 ok, 2 a user error)."""
    args = build_parser().parse_args(argv)
    logging.getLogger('absl').setLevel(logging.ERROR)  # Orbax's informational warnings
    try:
        args.run(args)
    except (ConvertError, FileNotFoundError, ValueError, ImportError) as e:
        if debug_requested(args.debug):
            raise
        whole = isinstance(e, StateDictMismatchError)  # every difference, one per line
        _error(str(e) if whole else str(e).splitlines()[0])
        return 2
    return 0
