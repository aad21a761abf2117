"""Flax models: EfficientViT M0-M5 and the GSViT encoder."""
from gsvit_jax.models.efficientvit import VARIANTS, EfficientViT, efficientvit
from gsvit_jax.models.fold import cast_kernels, fold_batchnorm
from gsvit_jax.models.gsvit import flatten_latent, gsvit_encoder, latent_dim, unflatten_latent

__all__ = ['VARIANTS', 'EfficientViT', 'cast_kernels', 'efficientvit', 'fold_batchnorm',
           'flatten_latent', 'gsvit_encoder', 'latent_dim', 'unflatten_latent']
