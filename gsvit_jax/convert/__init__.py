"""Weights between Flax and PyTorch (Microsoft EfficientViT, GSViT and timm layouts)."""
from gsvit_jax.convert.files import load_torch_file
from gsvit_jax.convert.keys import LAYOUTS, detect_layout
from gsvit_jax.convert.state_dict import (StateDictMismatchError, abstract_variables, from_torch,
                                          numpy_to_torch, to_torch)

__all__ = ['LAYOUTS', 'StateDictMismatchError', 'abstract_variables', 'detect_layout',
           'from_torch', 'load_torch_file', 'numpy_to_torch', 'to_torch']
