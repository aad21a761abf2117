"""Pre-train GSViT by next-frame prediction; rerun the same command to resume.

    python experiments/pretrain.py --config=experiments/configs/pretrain.py:demo --workdir=/tmp/demo
    python experiments/pretrain.py --config=experiments/configs/pretrain.py --workdir=/ckpt/gsvit

The demo builds a small generated dataset and trains a small model on the CPU in minutes; the
second line is the original recipe on GenSurgery. Override any config field with
--config.FIELD=VALUE (e.g. --config.init_from=GSViT.pkl); all of them, with the multi-host
options, are in experiments/configs/pretrain.py. The run ends with where its checkpoints,
metrics, pictures and TensorBoard logs are.
"""
if __name__ == '__main__':  # first of all: restart with huge pages (gsvit_jax/host_memory.py)
    from gsvit_jax.host_memory import reexec_with_huge_pages
    reexec_with_huge_pages()

import logging
import sys

import jax
from absl import flags
from ml_collections import config_flags

from gsvit_jax.config_args import run_app
from gsvit_jax.config_checks import PRETRAIN_MODE_FIELDS, refuse_ignored_overrides
from gsvit_jax.errors import run_reporting_errors
from gsvit_jax.pretrain import train_and_evaluate
from gsvit_jax.quiet_logs import hide_unactionable_logs
from gsvit_jax.train.summary import run_summary

config_flags.DEFINE_config_file('config', None, 'Config file (path.py[:args]).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Checkpoints, logs and pictures go here; rerun to resume.')
flags.DEFINE_bool('debug', False, 'Show the traceback of a user error (also GSVIT_JAX_DEBUG=1).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger('absl').setLevel(logging.WARNING)  # Orbax logs every file it writes at INFO
    hide_unactionable_logs()
    def run():
        refuse_ignored_overrides(flags.FLAGS.config, sys.argv, PRETRAIN_MODE_FIELDS)
        return train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)

    result = run_reporting_errors('pretrain', run, debug=flags.FLAGS.debug)
    if jax.process_index() == 0:  # the only process that writes metrics and pictures
        print(run_summary(flags.FLAGS.workdir, result), flush=True)


if __name__ == '__main__':
    run_app('pretrain', main)
