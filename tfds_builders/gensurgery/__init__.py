"""GenSurgery TFDS builder (`tfds.builder('gensurgery')` once this package is imported)."""
from tfds_builders.gensurgery.gensurgery_dataset_builder import Builder, BuilderConfig

__all__ = ['Builder', 'BuilderConfig']
