"""Data: synthetic surgical-looking video for demos and tests (TFDS/Grain pipelines: issue 3)."""
