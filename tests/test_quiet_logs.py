"""Log lines a user cannot act on are hidden at the default level and shown at DEBUG; every
other line passes."""
import logging

import pytest

from gsvit_jax.quiet_logs import hide_unactionable_logs

HIDDEN = [
    ('absl', "Using custom data configuration: BuilderConfig(name='demo_2fps_64')"),
    ('absl', 'Variant folder /w/tfds/gensurgery/demo/1.0.0 has no dataset_info.json'),
    ('absl', 'Done writing /d/cholec80/40_40/incomplete.GK3O86_1.0.0/cholec80-test.array_record'
             '. Number of examples: 2 (shards: [2])'),
    ('absl', 'Type handler registry type "<class \'jax.Array\'>" overriding jax.Array'),
    ('jax._src.xla_bridge', "Unable to initialize backend 'tpu': INTERNAL: Failed to open"),
    ('absl', 'CheckpointManagerOptions.read_only=True, setting save_interval_steps=0.'),
    ('absl', 'Given directory is read only=/w/phase_mlp/checkpoints'),
    ('absl', 'Item "state" was found in the checkpoint, but could not be restored. Please provide '
             'a `CheckpointHandlerRegistry`, or call `restore` with an appropriate '
             '`CheckpointArgs` subclass.'),
    ('absl', 'Metadata file does not exist: /w/phase_mlp/checkpoints/105/state/'
             '_CHECKPOINT_METADATA'),
]
SHOWN = [
    ('absl', 'train: skipped 1 of 6 videos (listed in /d/skipped_videos_train.json)'),
    ('absl', 'Done writing /d/cholec80/40_40/1.0.0/cholec80-test.tfrecord'),
    ('absl', 'checkpoint step 5 in /w/checkpoints is unreadable (ValueError: Metadata file does '
             'not exist); moved it to /w/damaged_checkpoints/5 and resumed from step 4'),
    ('jax._src.xla_bridge', 'An NVIDIA GPU may be present on this machine, but a CUDA-enabled '
                            'jaxlib is not installed. Falling back to cpu.'),
]


def passes(logger: str, message: str) -> bool:
    record = logging.LogRecord(logger, logging.WARNING, __file__, 1, message, (), None)
    return logging.getLogger(logger).filter(record)


@pytest.fixture
def root_level():
    root = logging.getLogger()
    level = root.level
    yield root
    root.setLevel(level)


def test_unactionable_lines_are_hidden_unless_debugging(root_level):
    hide_unactionable_logs()
    hide_unactionable_logs()  # once is enough; a second call adds nothing
    assert len(logging.getLogger('absl').filters) == len({type(f) for f in
                                                          logging.getLogger('absl').filters})
    root_level.setLevel(logging.INFO)
    assert not any(passes(*line) for line in HIDDEN)
    assert all(passes(*line) for line in SHOWN)
    root_level.setLevel(logging.DEBUG)
    assert all(passes(*line) for line in HIDDEN)
