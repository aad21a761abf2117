r"""Train a Cholec80 phase head on the frozen GSViT encoder; rerun the same command to resume.

    python experiments/train_phase.py --config=experiments/configs/phase_cholec80.py:demo \
        --workdir=/tmp/phase_demo

The commands for real data, the heads and every option: experiments/configs/phase_cholec80.py.
"""
if __name__ == '__main__':  # first of all: restart with huge pages (gsvit_jax/host_memory.py)
    from gsvit_jax.host_memory import reexec_with_huge_pages
    reexec_with_huge_pages()

import logging

from absl import flags
from ml_collections import config_flags

from gsvit_jax.config_args import run_app
from gsvit_jax.errors import run_reporting_errors
from gsvit_jax.phase.train import train_and_evaluate
from gsvit_jax.quiet_logs import hide_unactionable_logs

config_flags.DEFINE_config_file('config', None, 'Config file (path.py[:args]).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Checkpoints, logs, feature cache and the evaluation report '
                    'go here; rerun to resume.')
flags.DEFINE_bool('debug', False, 'Show the traceback of a user error (also GSVIT_JAX_DEBUG=1).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger('absl').setLevel(logging.WARNING)
    hide_unactionable_logs()
    result = run_reporting_errors(
        'train_phase', lambda: train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir),
        debug=flags.FLAGS.debug)
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()})


if __name__ == '__main__':
    run_app('train_phase', main)
