"""TFDS builders for GSViT data. Importing this package registers `gensurgery` and `cholec80`:

    import tfds_builders  # noqa: F401
    tfds.builder('cholec80')   # or tfds.data_source(...), tfds.load(...) with TensorFlow
"""
from tfds_builders import cholec80, gensurgery  # noqa: F401  (registration on import)
