"""Procedure-specific fine-tuning (GSViT paper §4.2): continue next-frame pre-training on one
procedure's GenSurgery videos only, lr 1e-4, one epoch.

    python experiments/pretrain.py \\
      --config=experiments/configs/finetune_procedure.py:procedure=cholecystectomy \\
      --config.init_from=/ckpt/gsvit_pretrained --workdir=/ckpt/gsvit_cholecystectomy

`procedure` is one of the paper's procedures (appendectomy, cholecystectomy, colectomy,
gastrectomy, hernia_repair, esophagectomy, hemicolectomy, hepatectomy, splenectomy; see
`gsvit_jax.data.pretrain_data.PROCEDURES` for the GenSurgery lists each covers) or any list name.
`init_from` takes a pre-training workdir, a `gsvit-convert from-torch` output or GSViT.pkl.
Add `runlocal` for a tiny smoke run on the built-in demo data.
"""
import importlib.util
import pathlib

from ml_collections import ConfigDict

from gsvit_jax.config_args import parse_arg

_spec = importlib.util.spec_from_file_location('pretrain_config',
                                               pathlib.Path(__file__).with_name('pretrain.py'))
pretrain_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pretrain_config)


def get_config(arg: str | None = None) -> ConfigDict:
    arg = parse_arg(arg, procedure='cholecystectomy', runlocal=False)
    config = pretrain_config.get_config('demo' if arg.runlocal else None)
    config.data.procedure = arg.procedure
    config.optimizer.update(lr=1e-4, end_lr=1e-4, schedule='constant')
    config.epochs = 1.0  # total_steps is derived from the number of training pairs
    config.init_from = ''  # required: set --config.init_from
    if arg.runlocal:
        config.epochs = 0.5
    return config
