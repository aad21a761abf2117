"""gsvit-jax: GSViT, the General Surgery Vision Transformer, in JAX/Flax.

    enc = gsvit_jax.load_encoder('GSViT.pkl')      # or None for random weights
    latents = enc.latent(frames_rgb_uint8)          # (N, 6144)
"""
from typing import Any

__version__ = '0.1.0'
__all__ = ['Autoencoder', 'Encoder', 'load_autoencoder', 'load_encoder', 'save_weights']


def __getattr__(name: str) -> Any:
    """The public API, imported on first use: `import gsvit_jax` (and every submodule import)
    stays light and does not import JAX before an entry point has set XLA's flags."""
    if name in __all__:
        from gsvit_jax import api
        return getattr(api, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
