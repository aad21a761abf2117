"""gsvit-jax: GSViT, the General Surgery Vision Transformer, in JAX/Flax."""
__version__ = '0.1.0'
