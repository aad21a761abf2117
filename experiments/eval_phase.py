r"""Evaluate trained phase runs side by side (Table-1 shape, strict and relaxed metrics):

    python experiments/eval_phase.py --workdir=/ckpt/phase_mlp --workdir=/ckpt/phase_tcn \
        --out=/ckpt/phase_eval [--split=test]

Writes report.md, report.json, timelines_*.png and confusion_matrix_*.png to --out.
"""
import logging

from absl import flags

from gsvit_jax.config_args import run_app
from gsvit_jax.errors import run_reporting_errors

from gsvit_jax.phase.evaluate import evaluate_runs
from gsvit_jax.quiet_logs import hide_unactionable_logs

flags.DEFINE_multi_string('workdir', None, 'workdir of a train_phase.py run (repeat for more)')
flags.DEFINE_string('out', None, 'output folder for the report and pictures')
flags.DEFINE_string('split', None, 'split to evaluate (default: each run\'s eval_split)')
flags.DEFINE_bool('debug', False, 'Show the traceback of a user error (also GSVIT_JAX_DEBUG=1).')
flags.mark_flags_as_required(['workdir', 'out'])


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger('absl').setLevel(logging.WARNING)
    hide_unactionable_logs()
    run_reporting_errors('eval_phase', lambda: evaluate_runs(
        flags.FLAGS.workdir, flags.FLAGS.out, split=flags.FLAGS.split), debug=flags.FLAGS.debug)
    print((flags.FLAGS.out.rstrip('/') + '/report.md'))


if __name__ == '__main__':
    run_app('eval_phase', main)
