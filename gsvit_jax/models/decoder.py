"""GSViT's "asymmetric" decoder (pre-training only) and the encoder+decoder autoencoder.

Latent (B, s, s, 384) -> Linear to base x base x widths[0] (+BatchNorm1d, exact GELU) -> five
stride-2 transposed convs (BatchNorm + ReLU after the first four) with residual squeeze-excite blocks
after the 2nd and 4th -> sigmoid image (tanh when predicting the frame change). The defaults are the
original's (224x224 output, 328,210,243 parameters); `widths`/`base` shrink it for small configs.
Module and variable names mirror the PyTorch ones (`decoder.fc`, `decoder.res1.6.fc.0`, ...).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from gsvit_jax.kernels import onednn
from gsvit_jax.models.batchnorm import BatchNorm
from gsvit_jax.models.efficientvit import (Conv2d, EfficientViT, Linear, efficientvit,
                                             torch_default_init)
from gsvit_jax.models.gsvit import flatten_latent
from gsvit_jax.models.remat import call_block

DEFAULT_WIDTHS = (1024, 512, 512, 256, 64)


def torch_bias_init(fan_in: int):
    """PyTorch's default bias init for Linear/Conv: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class ConvTranspose2d(nn.Module):
    """PyTorch `ConvTranspose2d` (weight stored as PyTorch's (in, out, k, k)), channels-last.

    On CPU, oneDNN's transposed convolution (`onednn.conv_transpose2d`). With XLA: a stride-1 conv
    of the stride-dilated input with the spatially flipped kernel and padding k - 1 - p on each
    side, in its sub-pixel form for the decoder's k=4, s=2, p=1.
    """

    features: int
    kernel_size: int = 4
    stride: int = 2
    padding: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        k, in_features = self.kernel_size, x.shape[-1]
        fan_in = self.features * k * k  # PyTorch computes it from weight.size(1)
        weight = self.param('weight', nn.initializers.variance_scaling(
            1.0 / 3.0, 'fan_in', 'uniform', in_axis=1, out_axis=0),
            (in_features, self.features, k, k))
        bias = self.param('bias', torch_bias_init(fan_in), (self.features,))
        x = x.astype(self.dtype)
        if onednn.use_onednn(x.dtype):
            y = onednn.conv_transpose2d(x, weight, stride=self.stride, padding=self.padding)
        elif (k, self.stride, self.padding) == (4, 2, 1):
            y = _upsample2x_subpixel(x, weight.astype(self.dtype))
        else:
            kernel = jnp.flip(jnp.transpose(weight, (2, 3, 0, 1)), axis=(0, 1))  # (k, k, in, out)
            pad = k - 1 - self.padding
            y = jax.lax.conv_transpose(x, kernel.astype(self.dtype), (self.stride, self.stride),
                                       ((pad, pad), (pad, pad)),
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
        return y + bias.astype(self.dtype)


# Sub-pixel form of ConvTranspose2d(k=4, s=2, p=1): output pixel (2m + a) sums input m - 1, m, m + 1
# with kernel taps 3, 1, - (a = 0) or -, 2, 0 (a = 1). One ordinary 3x3 conv with 4x the output
# channels, then depth-to-space, gives the same result; unlike an input-dilated convolution, its
# gradient is fast on every backend (XLA:CPU's dilated-convolution backward was ~50x slower).
def _subpixel_kernel(weight: jnp.ndarray) -> jnp.ndarray:
    """PyTorch weight (in, out, 4, 4) -> 3x3 HWIO kernel (3, 3, in, (a b out)).

    Built from strided slices and zero padding, not a gather: the gradient is then slices and pads
    of the kernel's gradient instead of a scatter into a zero buffer (memory).
    """
    flipped = jnp.transpose(weight, (2, 3, 0, 1))[::-1, ::-1]  # tap 3 - k at index k
    phases = [jnp.pad(flipped[a::2, b::2], ((a, 1 - a), (b, 1 - b), (0, 0), (0, 0)))
              for a in (0, 1) for b in (0, 1)]
    return einops.rearrange(jnp.stack(phases), '(a b) dy dx i o -> dy dx i (a b o)', a=2)


def _upsample2x_subpixel(x: jnp.ndarray, weight: jnp.ndarray) -> jnp.ndarray:
    """x (B, H, W, in), PyTorch weight (in, out, 4, 4) -> (B, 2H, 2W, out)."""
    y = jax.lax.conv_general_dilated(x, _subpixel_kernel(weight), (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return einops.rearrange(y, 'n h w (a b o) -> n (h a) (w b) o', a=2, b=2)


class SEAttention(nn.Module):
    """Squeeze-excite: spatial mean -> Linear C/r (no bias) -> ReLU -> Linear C -> sigmoid gate."""

    reduction: int = 16
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        channels = x.shape[-1]
        s = jnp.mean(x, axis=(1, 2))
        s = nn.relu(nn.Dense(channels // self.reduction, use_bias=False,
                             kernel_init=torch_default_init, dtype=self.dtype, name='fc_0')(s))
        s = nn.sigmoid(nn.Dense(channels, use_bias=False, kernel_init=torch_default_init,
                                dtype=self.dtype, name='fc_2')(s))
        return x * s[:, None, None, :]


class ResidualSE(nn.Module):
    """Branch added to its input: conv3x3, BN, ReLU, conv3x3, BN, sigmoid, SE, ReLU.

    (The branch ends in sigmoid * gate then ReLU, so it always adds a value in (0, 1), as the
    original does.) Names are the PyTorch Sequential indices 0, 1, 3, 4, 6.
    """

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        channels = x.shape[-1]
        conv = dict(kernel_size=3, padding=1, use_bias=True,
                    bias_init=torch_bias_init(9 * channels), dtype=self.dtype)
        y = Conv2d(channels, name='0', **conv)(x)
        y = nn.relu(BatchNorm(dtype=self.dtype, name='1')(y, train))
        y = Conv2d(channels, name='3', **conv)(y)
        y = nn.sigmoid(BatchNorm(dtype=self.dtype, name='4')(y, train))
        y = nn.relu(SEAttention(dtype=self.dtype, name='6')(y))
        return x + y


class Upsample(nn.Module):
    """The decoder's `conv{index}` (x2 transposed conv) + `bn{index}` + ReLU."""

    features: int
    index: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = ConvTranspose2d(self.features, dtype=self.dtype, name=f'conv{self.index}')(x)
        return nn.relu(BatchNorm(dtype=self.dtype, name=f'bn{self.index}')(x, train))


class Decoder(nn.Module):
    """Latent features (B, s, s, C) -> image (B, 32*base, 32*base, 3) in (0, 1) (or (-1, 1))."""

    widths: Sequence[int] = DEFAULT_WIDTHS
    base: int = 7
    out_channels: int = 3
    predict_change: bool = False
    remat: bool = False  # recompute stages and residual blocks in the backward pass: less memory
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        w0, w1, w2, w3, w4 = self.widths

        def residual(x, name):
            block = ResidualSE(dtype=self.dtype, name=name, parent=None)
            return call_block(self, block, x, train, remat=self.remat)

        latent = flatten_latent(features).astype(self.dtype)  # PyTorch's C-major order
        units = self.base * self.base * w0
        x = Linear(units, bias_init=torch_bias_init(latent.shape[-1]), dtype=self.dtype,
                   name='fc')(latent)
        x = BatchNorm(dtype=self.dtype, name='bn1d')(x, train)
        x = nn.gelu(x, approximate=False)  # PyTorch's default GELU is the exact erf form
        x = einops.rearrange(x, 'b (c h w) -> b h w c', h=self.base, w=self.base)

        def up(x, features, index):
            block = Upsample(features, index, dtype=self.dtype, parent=None)
            return call_block(self, block, x, train, shared=True, remat=self.remat)

        x = up(x, w1, 1)
        x = up(x, w2, 2)
        x = residual(x, 'res1')
        x = up(x, w3, 3)
        x = up(x, w4, 4)
        x = residual(x, 'res2')
        x = ConvTranspose2d(self.out_channels, dtype=self.dtype, name='conv5')(x)
        x = x.astype(jnp.float32)
        return jnp.tanh(x) if self.predict_change else nn.sigmoid(x)


class GSViTAutoencoder(nn.Module):
    """`evit` (EfficientViT encoder, no head) + `decoder`: frame t -> predicted frame t + gap.

    Variable names follow the original `EfficientViTAutoEncoder` (`evit.*`, `decoder.*`), so the
    gsvit layout of `gsvit_jax.convert` maps them to the released `GSViT.pkl` keys.
    """

    evit: EfficientViT
    decoder: Decoder

    @property
    def img_size(self) -> int:
        return self.evit.img_size

    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        return self.decoder(self.evit(x, train), train)


def gsvit_autoencoder(variant: str = 'm5', img_size: int = 224,
                      widths: Sequence[int] = DEFAULT_WIDTHS, predict_change: bool = False,
                      dtype: Any = jnp.float32, remat: bool = False) -> GSViTAutoencoder:
    """Encoder (EfficientViT `variant`) + decoder sized for `img_size` (a multiple of 32)."""
    if img_size % 32:
        raise ValueError(f'the decoder upsamples 32x from a square base: img_size must be a '
                         f'multiple of 32, got {img_size}')
    encoder = efficientvit(variant, num_classes=0, img_size=img_size, remat=remat, dtype=dtype)
    decoder = Decoder(tuple(widths), base=img_size // 32, predict_change=predict_change,
                      remat=remat, dtype=dtype)
    return GSViTAutoencoder(encoder, decoder)
