"""Hide log lines a user cannot act on: TFDS's notices about custom builder configs and datasets
not built yet and its per-split "Done writing" lines (they name the temporary `incomplete.*`
folder, gone after the build), Orbax's type-handler override (ours, on CPU), Orbax's notices when a
finished run's checkpoint is read (evaluation, export) and JAX's search for a TPU. They still
show when the root logger is at DEBUG."""
from __future__ import annotations

import logging
import re

_UNACTIONABLE = {  # logger -> messages to hide
    'absl': re.compile(r'^Using custom data configuration|^Variant folder .* has no '
                       r'dataset_info\.json$|^Done writing .*/incomplete\.|'
                       r'^Type handler registry type .* overriding|'
                       # Orbax, when a finished run's checkpoint is read (read-only, one item)
                       r'^CheckpointManagerOptions\.read_only=True, setting |'
                       r'^Given directory is read only=|'
                       r'^Item ".*" was found in the checkpoint, but could not be restored|'
                       r'^Metadata file does not exist: .*_CHECKPOINT_METADATA$'),
    'jax._src.xla_bridge': re.compile(r"^Unable to initialize backend 'tpu'"),
}


class _Unactionable(logging.Filter):
    def __init__(self, pattern: re.Pattern):
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return (logging.getLogger().isEnabledFor(logging.DEBUG)
                or not self.pattern.search(record.getMessage()))


def hide_unactionable_logs() -> None:
    """Install the filters on the loggers that write those lines (once; later calls do nothing)."""
    for name, pattern in _UNACTIONABLE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Unactionable) for f in logger.filters):
            logger.addFilter(_Unactionable(pattern))
