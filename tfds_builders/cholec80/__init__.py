"""Cholec80 TFDS builder (`cholec80`); importing this package registers it with TFDS."""
from tfds_builders.cholec80.annotations import FPS, PHASES, TOOLS, AnnotationError
from tfds_builders.cholec80.cholec80_dataset_builder import (SPLIT_CONVENTIONS, Builder,
                                                             Cholec80Config)

__all__ = ['AnnotationError', 'Builder', 'Cholec80Config', 'FPS', 'PHASES', 'SPLIT_CONVENTIONS',
           'TOOLS']
