"""Pre-train GSViT: see experiments/configs/pretrain.py for the commands."""
import logging

from absl import app, flags
from ml_collections import config_flags

from gsvit_jax.errors import run_reporting_errors
from gsvit_jax.pretrain import train_and_evaluate

config_flags.DEFINE_config_file('config', None, 'Config file (path.py[:args]).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Checkpoints, logs and pictures go here; rerun to resume.')
flags.DEFINE_bool('debug', False, 'Show the traceback of a user error (also GSVIT_JAX_DEBUG=1).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger('absl').setLevel(logging.WARNING)  # Orbax logs every file it writes at INFO
    result = run_reporting_errors(
        'pretrain', lambda: train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir),
        debug=flags.FLAGS.debug)
    print({k: round(v, 5) if isinstance(v, float) else v for k, v in result.items()})


if __name__ == '__main__':
    app.run(main)
