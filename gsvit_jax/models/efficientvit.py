"""EfficientViT (Liu et al., CVPR 2023; Microsoft "MSRA" variant) in Flax Linen, channels-last.

Layout follows the family file convention: primitives -> blocks -> stages -> model -> variant table
(M0...M5) -> factory. Module names mirror the original PyTorch module names (`patch_embed`, `blocks1`,
`mixer.m.attn.qkvs.0.c`, ...), so converting weights is a rename; PyTorch's `name.N` list indices
appear here as Flax names `name_N` (see `gsvit_jax.convert.keys`).

Every Conv2d+BatchNorm unit (`ConvBN`) and the BatchNorm+Linear head (`BNLinear`) has a `fused`
switch: the fused model has single conv/linear layers whose weights come from `fold_batchnorm`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gsvit_jax.kernels import depthwise, matmul, onednn
from gsvit_jax.models.batchnorm import BatchNorm
from gsvit_jax.models.remat import call_block

# PyTorch's default Conv2d/Linear init: kaiming_uniform(a=sqrt(5)) == U(+-1/sqrt(fan_in)).
torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


# ----------------------------------------------------------------------------------------------
# Primitives
# ----------------------------------------------------------------------------------------------
# How `DepthwiseConv` computes: 'auto' (on CPU: oneDNN's kernel for inference where it is built,
# else shifted; grouped elsewhere), 'shifted' or 'grouped'. Read when a function is traced; e.g.
# benchmarks set 'grouped' to analyse the program a GPU runs.
DEPTHWISE_IMPL = 'auto'


class DepthwiseConv(nn.Module):
    """A depthwise k x k conv (PyTorch `groups == channels`), parameters as `nn.Conv`'s, then ReLU
    if `relu`, plus a `residual` given to the call.

    On CPU it is computed as a sum of k*k shifted multiplies (`kernels.depthwise.shifted_sum`): the
    same result up to float rounding, while XLA:CPU runs the grouped convolution 10-50x slower
    (forward) and ~5x slower (backward), at the price of more training-step temporaries. For
    inference (`inference`, set by a fused ConvBN) oneDNN's depthwise kernel computes it, 2-4x
    faster again. Other backends use the grouped convolution (cuDNN has depthwise kernels). See
    `DEPTHWISE_IMPL`.
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    use_bias: bool = False
    relu: bool = False
    inference: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, residual: jnp.ndarray | None = None) -> jnp.ndarray:
        k, s, p = self.kernel_size, self.stride, self.padding
        kernel = self.param('kernel', torch_default_init, (k, k, 1, self.features), jnp.float32)
        bias = (self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
                if self.use_bias else None)
        x = x.astype(self.dtype)
        impl = DEPTHWISE_IMPL
        if impl == 'auto' and jax.default_backend() == 'cpu' and self.inference:
            return depthwise.forward(x, kernel, bias, residual, stride=s, padding=p,
                                     relu=self.relu)
        if impl == 'shifted' or (impl == 'auto' and jax.default_backend() == 'cpu'):
            return depthwise.shifted_sum(x, kernel, bias, residual, s, p, self.relu)
        y = jax.lax.conv_general_dilated(x, kernel.astype(self.dtype), (s, s), ((p, p), (p, p)),
                                         dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                         feature_group_count=self.features)
        y = y if bias is None else y + bias.astype(self.dtype)
        y = nn.relu(y) if self.relu else y
        return y if residual is None else residual + y


class PointwiseConv(nn.Module):
    """A 1x1, stride-1 conv computed as one matrix product over (B*H*W, C_in), then ReLU if `relu`;
    parameters exactly `nn.Conv`'s (`kernel` (1, 1, in, out), `bias`). XLA:CPU ran these as
    convolutions about 2x slower than the same dot, and on the CPU `matmul.dense` runs the product
    in oneDNN, faster still and in bfloat16 on AMX (benchmarks/RESULTS.md)."""

    features: int
    use_bias: bool = False
    relu: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, residual: jnp.ndarray | None = None) -> jnp.ndarray:
        """`residual`: added to the output inside the product (not with `relu`)."""
        kernel = self.param('kernel', torch_default_init, (1, 1, x.shape[-1], self.features),
                            jnp.float32)
        bias = (self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
                if self.use_bias else None)
        return matmul.dense(x.astype(self.dtype), kernel[0, 0], bias, relu=self.relu,
                            residual=residual)


# Collections through which a train step takes a `Linear` layer's weight gradient as its factors
# (`matmul.WeightGrad`): each layer stores its input in LINEAR_INPUTS when that collection is
# mutable (not in `init`: the model's variables stay params and batch_stats), and a layer given
# a zero probe `y` in OUTPUT_PROBES adds it to its output and stops the kernel's gradient; the
# probe's gradient is then the output's (see `gsvit_jax.train.weight_grads`).
LINEAR_INPUTS = 'linear_inputs'
OUTPUT_PROBES = 'linear_output_probes'


class Linear(nn.Module):
    """`nn.Dense` (parameters `kernel` (in, out), `bias`) computed by `matmul.dense`: on the CPU
    oneDNN's product when it is large enough, e.g. the decoder's 6144 x 50176 layer."""

    features: int
    kernel_init: Callable = torch_default_init
    bias_init: Callable = nn.initializers.zeros
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel = self.param('kernel', self.kernel_init, (x.shape[-1], self.features), jnp.float32)
        bias = self.param('bias', self.bias_init, (self.features,), jnp.float32)
        x = x.astype(self.dtype)
        if self.is_mutable_collection(LINEAR_INPUTS) and not self.is_initializing():
            self.put_variable(LINEAR_INPUTS, 'x', x)
        if not self.has_variable(OUTPUT_PROBES, 'y'):
            return matmul.dense(x, kernel, bias)
        y = matmul.dense(x, jax.lax.stop_gradient(kernel), bias)
        return y + self.get_variable(OUTPUT_PROBES, 'y')


class Conv2d(nn.Module):
    """A dense k x k conv with symmetric zero padding; parameters exactly `nn.Conv`'s (`kernel`
    (k, k, in, out), `bias`). Computed by `gsvit_jax.kernels.onednn.conv2d`: oneDNN on the CPU
    backend (XLA:CPU's own convolution is several times slower there), XLA's conv elsewhere."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    use_bias: bool = False
    relu: bool = False
    bias_init: Callable = nn.initializers.zeros
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        k = self.kernel_size
        kernel = self.param('kernel', torch_default_init, (k, k, x.shape[-1], self.features),
                            jnp.float32)
        bias = (self.param('bias', self.bias_init, (self.features,), jnp.float32)
                if self.use_bias else None)
        return onednn.conv2d(x.astype(self.dtype), kernel, bias, stride=self.stride,
                             padding=self.padding, relu=self.relu)


class ConvBN(nn.Module):
    """PyTorch `Conv2d_BN`: bias-free conv `c` then BatchNorm `bn`; when fused, one conv with bias.
    `relu`: a ReLU after it (in the fused 1x1 case, inside the product's kernel). A `residual`
    given to the call is added to the output (fused, 1x1 or depthwise, without ReLU: inside the
    product or the depthwise sum, no pass of its own over the activations)."""

    features: int
    kernel_size: int = 1
    stride: int = 1
    padding: int = 0
    groups: int = 1
    bn_weight_init: float = 1.0
    relu: bool = False
    fused: bool = False
    dtype: Any = jnp.float32
    takes_residual = True  # not a field: see `Residual`

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False,
                 residual: jnp.ndarray | None = None) -> jnp.ndarray:
        if self.fused and train:
            raise ValueError('a fused (BatchNorm-folded) model is for inference only; use train=False')
        k, p = self.kernel_size, self.padding
        kernel_relu = self.fused and self.relu  # set to False below where the layer cannot
        kernel_residual = None  # the residual, where the product adds it
        if self.groups > 1 and self.groups == self.features == x.shape[-1]:
            if self.fused and not self.relu:
                kernel_residual = residual
            x = DepthwiseConv(self.features, k, self.stride, p, use_bias=self.fused,
                              relu=kernel_relu, inference=self.fused, dtype=self.dtype,
                              name='c')(x, kernel_residual)
        elif k == 1 and self.stride == 1 and self.groups == 1 and p == 0:
            if self.fused and not self.relu:
                kernel_residual = residual
            x = PointwiseConv(self.features, use_bias=self.fused, relu=kernel_relu,
                              dtype=self.dtype, name='c')(x, kernel_residual)
        elif self.groups == 1:
            x = Conv2d(self.features, k, self.stride, p, use_bias=self.fused, relu=kernel_relu,
                       dtype=self.dtype, name='c')(x)
        else:
            # explicit padding: 'SAME' differs from PyTorch at stride 2
            x = nn.Conv(self.features, (k, k), strides=(self.stride, self.stride),
                        padding=((p, p), (p, p)),
                        feature_group_count=self.groups, use_bias=self.fused,
                        kernel_init=torch_default_init, dtype=self.dtype, name='c')(x)
            kernel_relu = False
        if not self.fused:
            x = BatchNorm(weight_init=self.bn_weight_init, dtype=self.dtype, name='bn')(x, train)
        x = nn.relu(x) if self.relu and not kernel_relu else x
        return x if residual is None or kernel_residual is not None else x + residual


class BNLinear(nn.Module):
    """PyTorch `BN_Linear` classification head: BatchNorm1d `bn` then Linear `l`."""

    features: int
    fused: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if not self.fused:
            x = BatchNorm(dtype=self.dtype, name='bn')(x, train)
        elif train:
            raise ValueError('a fused (BatchNorm-folded) model is for inference only; use train=False')
        return nn.Dense(self.features, kernel_init=nn.initializers.truncated_normal(0.02),
                        dtype=self.dtype, name='l')(x)


class Residual(nn.Module):
    """x + m(x); `m` is created unbound (`parent=None`) so its variables live under `<name>/m`.
    A module with `takes_residual` is called as m(x, train, residual=x) and adds x itself (inside
    its last product, where it can)."""

    m: nn.Module

    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if getattr(self.m, 'takes_residual', False):
            return self.m(x, train, residual=x)
        return x + self.m(x, train)


class FFN(nn.Module):
    """1x1 ConvBN expand (`pw1`), ReLU, 1x1 ConvBN project (`pw2`, BN weight initialised to 0);
    a `residual` is added to the output, inside `pw2`'s product when fused."""

    dim: int
    hidden: int
    fused: bool = False
    dtype: Any = jnp.float32
    takes_residual = True  # not a field: see `Residual`

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False,
                 residual: jnp.ndarray | None = None) -> jnp.ndarray:
        x = ConvBN(self.hidden, relu=True, fused=self.fused, dtype=self.dtype, name='pw1')(x, train)
        return ConvBN(self.dim, bn_weight_init=0.0, fused=self.fused, dtype=self.dtype,
                      name='pw2')(x, train, residual)


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """timm's channel rounding used by SqueezeExcite (round to a multiple, never lose >10%)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < round_limit * value else new


class SqueezeExcite(nn.Module):
    """timm `SEModule`: spatial mean -> 1x1 conv `fc1` (bias) -> ReLU -> `fc2` -> sigmoid gate."""

    channels: int
    rd_ratio: float = 0.25
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        reduced = make_divisible(self.channels * self.rd_ratio)
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = nn.relu(nn.Conv(reduced, (1, 1), kernel_init=torch_default_init, dtype=self.dtype,
                            name='fc1')(s))
        s = nn.Conv(self.channels, (1, 1), kernel_init=torch_default_init, dtype=self.dtype,
                    name='fc2')(s)
        return x * nn.sigmoid(s)


def attention_bias_index(resolution: int) -> np.ndarray:
    """(R^2, R^2) table index for every token pair of an RxR grid: |drow| * R + |dcol|."""
    rows, cols = np.divmod(np.arange(resolution * resolution), resolution)
    return (np.abs(rows[:, None] - rows[None, :]) * resolution
            + np.abs(cols[:, None] - cols[None, :])).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------
class CascadedGroupAttention(nn.Module):
    """Cascaded Group Attention on an RxR map: head i sees channel chunk i plus head i-1's output.
    A `residual` is added to the output (inside `proj_1`'s product when fused)."""

    dim: int
    key_dim: int
    num_heads: int
    attn_ratio: float
    resolution: int
    kernels: Sequence[int]
    fused: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False,
                 residual: jnp.ndarray | None = None) -> jnp.ndarray:
        batch, height, width, _ = x.shape  # (B, R, R, C)
        if height * width != self.resolution ** 2:
            raise ValueError(f'attention built for a {self.resolution}x{self.resolution} map '
                             f'got {height}x{width}')
        kd, heads = self.key_dim, self.num_heads
        d = int(self.attn_ratio * kd)
        biases = self.param('attention_biases', nn.initializers.zeros,
                            (heads, self.resolution ** 2))
        bias_index = attention_bias_index(self.resolution)
        scale = kd ** -0.5
        conv = dict(fused=self.fused, dtype=self.dtype)

        chunks = jnp.split(x, heads, axis=-1)
        outputs = []
        feat = chunks[0]
        for i in range(heads):
            if i > 0:
                feat = outputs[-1] + chunks[i]  # the cascade
            qkv = ConvBN(2 * kd + d, name=f'qkvs_{i}', **conv)(feat, train)
            q, k, v = jnp.split(qkv, [kd, 2 * kd], axis=-1)
            q = ConvBN(kd, self.kernels[i], padding=self.kernels[i] // 2, groups=kd,
                       name=f'dws_{i}', **conv)(q, train)
            q, k, v = (einops.rearrange(t, 'b h w c -> b (h w) c') for t in (q, k, v))
            logits = jnp.einsum('bnc,bmc->bnm', q, k).astype(jnp.float32) * scale
            logits = logits + biases[i][bias_index]
            attn = nn.softmax(logits, axis=-1).astype(v.dtype)
            out = jnp.einsum('bnm,bmc->bnc', attn, v)
            outputs.append(einops.rearrange(out, 'b (h w) c -> b h w c', h=height))
        x = nn.relu(jnp.concatenate(outputs, axis=-1))
        return ConvBN(self.dim, bn_weight_init=0.0, name='proj_1', **conv)(x, train, residual)


class LocalWindowAttention(nn.Module):
    """CGA on the whole map if it fits one window, else on zero-padded (bottom/right) windows."""

    dim: int
    key_dim: int
    num_heads: int
    attn_ratio: float
    resolution: int
    window_resolution: int
    kernels: Sequence[int]
    fused: bool = False
    dtype: Any = jnp.float32
    takes_residual = True  # not a field: see `Residual`

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False,
                 residual: jnp.ndarray | None = None) -> jnp.ndarray:
        """`residual`: added to the output, inside the attention's last product when the map is
        one window (windows would need it rearranged: a pass of its own)."""
        window = min(self.window_resolution, self.resolution)
        attn = CascadedGroupAttention(self.dim, self.key_dim, self.num_heads, self.attn_ratio,
                                      window, self.kernels, self.fused, self.dtype, name='attn')
        _, height, width, _ = x.shape
        if height <= window and width <= window:
            return attn(x, train, residual)
        pad_b, pad_r = (-height) % window, (-width) % window
        x = jnp.pad(x, ((0, 0), (0, pad_b), (0, pad_r), (0, 0)))
        x = einops.rearrange(x, 'b (nh wh) (nw ww) c -> (b nh nw) wh ww c', wh=window, ww=window)
        x = attn(x, train)
        x = einops.rearrange(x, '(b nh nw) wh ww c -> b (nh wh) (nw ww) c',
                             nh=(height + pad_b) // window, nw=(width + pad_r) // window)
        x = x[:, :height, :width, :]
        return x if residual is None else residual + x


# ----------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------
class EfficientViTBlock(nn.Module):
    """Sandwich block: dw0 -> ffn0 -> mixer (window attention) -> dw1 -> ffn1, each residual."""

    dim: int
    key_dim: int
    num_heads: int
    resolution: int
    window_resolution: int
    kernels: Sequence[int]
    fused: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        c = dict(fused=self.fused, dtype=self.dtype)
        dim = self.dim

        def dw():
            return ConvBN(dim, 3, padding=1, groups=dim, bn_weight_init=0.0, parent=None, **c)

        x = Residual(dw(), name='dw0')(x, train)
        x = Residual(FFN(dim, 2 * dim, parent=None, **c), name='ffn0')(x, train)
        attn_ratio = dim / (self.key_dim * self.num_heads)
        mixer = LocalWindowAttention(dim, self.key_dim, self.num_heads, attn_ratio, self.resolution,
                                     self.window_resolution, self.kernels, parent=None, **c)
        x = Residual(mixer, name='mixer')(x, train)
        x = Residual(dw(), name='dw1')(x, train)
        return Residual(FFN(dim, 2 * dim, parent=None, **c), name='ffn1')(x, train)


class SubsampleResidual(nn.Module):
    """The residual depthwise-conv + FFN pair placed before and after each PatchMerging."""

    dim: int
    fused: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        c = dict(fused=self.fused, dtype=self.dtype)
        dw = ConvBN(self.dim, 3, padding=1, groups=self.dim, parent=None, **c)
        x = Residual(dw, name='0')(x, train)
        return Residual(FFN(self.dim, 2 * self.dim, parent=None, **c), name='1')(x, train)


class PatchMerging(nn.Module):
    """Downsample x2: 1x1 expand to 4*dim, stride-2 depthwise 3x3, squeeze-excite, 1x1 project."""

    dim: int
    out_dim: int
    fused: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        c = dict(fused=self.fused, dtype=self.dtype)
        hidden = 4 * self.dim
        x = ConvBN(hidden, relu=True, name='conv1', **c)(x, train)
        x = ConvBN(hidden, 3, stride=2, padding=1, groups=hidden, relu=True, name='conv2',
                   **c)(x, train)
        x = SqueezeExcite(hidden, dtype=self.dtype, name='se')(x)
        return ConvBN(self.out_dim, name='conv3', **c)(x, train)


# ----------------------------------------------------------------------------------------------
# Stages and model
# ----------------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """Four stride-2 3x3 ConvBNs (dim/8, /4, /2, /1) with ReLU between: 16x downsampling."""

    dim: int
    fused: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        widths = (self.dim // 8, self.dim // 4, self.dim // 2, self.dim)
        for i, width in enumerate(widths):
            x = ConvBN(width, 3, stride=2, padding=1, relu=i < 3, fused=self.fused,
                       dtype=self.dtype, name=str(2 * i))(x, train)  # PyTorch indices 0, 2, 4, 6
        return x


class Stage(nn.Module):
    """`blocksN`: optional subsample (pre-residual, PatchMerging, post-residual) then N blocks."""

    in_dim: int
    dim: int
    depth: int
    key_dim: int
    num_heads: int
    resolution: int  # map size seen by this stage's blocks
    window_size: int
    kernels: Sequence[int]
    downsample: bool
    fused: bool = False
    remat: bool = False  # recompute each block's activations in the backward pass (memory)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        c = dict(fused=self.fused, dtype=self.dtype, parent=None)
        blocks = []
        if self.downsample:
            blocks += [SubsampleResidual(self.in_dim, name='0', **c),
                       PatchMerging(self.in_dim, self.dim, name='1', **c),
                       SubsampleResidual(self.dim, name='2', **c)]
        blocks += [EfficientViTBlock(self.dim, self.key_dim, self.num_heads, self.resolution,
                                     self.window_size, self.kernels, name=str(len(blocks) + j), **c)
                   for j in range(self.depth)]
        for block in blocks:
            x = call_block(self, block, x, train, remat=self.remat)
        return x


def _conv_out(size: int) -> int:
    """Output side of a 3x3, stride-2, padding-1 convolution."""
    return (size - 1) // 2 + 1


def stage_resolutions(img_size: int) -> tuple[int, int, int]:
    """Feature-map sides of the three stages, e.g. 224 -> (14, 7, 4)."""
    r = img_size
    for _ in range(4):
        r = _conv_out(r)
    return r, _conv_out(r), _conv_out(_conv_out(r))


class EfficientViT(nn.Module):
    """EfficientViT classifier, or feature extractor when `num_classes == 0`.

    Input (B, img_size, img_size, 3) float -> logits (B, num_classes), or features
    (B, h, w, embed_dim[-1]) without pooling when `num_classes == 0` (GSViT: (B, 4, 4, 384)).
    """

    embed_dim: Sequence[int]
    depth: Sequence[int]
    num_heads: Sequence[int]
    kernels: Sequence[int]
    key_dim: Sequence[int] = (16, 16, 16)
    window_size: Sequence[int] = (7, 7, 7)
    img_size: int = 224
    num_classes: int = 1000
    fused: bool = False
    remat: bool = False  # recompute block activations in the backward pass: less training memory
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if x.ndim != 4 or x.shape[1:] != (self.img_size, self.img_size, 3):
            raise ValueError(f'expected input (B, {self.img_size}, {self.img_size}, 3) channels-last, '
                             f'got {x.shape}; build the model with img_size=... for other sizes '
                             'and see gsvit_jax.preprocess')
        c = dict(fused=self.fused, dtype=self.dtype)
        embed = PatchEmbed(self.embed_dim[0], name='patch_embed', parent=None, **c)
        x = call_block(self, embed, x.astype(self.dtype), train, remat=self.remat)
        resolutions = stage_resolutions(self.img_size)
        for i in range(3):
            x = Stage(self.embed_dim[max(i - 1, 0)], self.embed_dim[i], self.depth[i],
                      self.key_dim[i], self.num_heads[i], resolutions[i], self.window_size[i],
                      tuple(self.kernels), downsample=i > 0, remat=self.remat,
                      name=f'blocks{i + 1}', **c)(x, train)
        if self.num_classes == 0:
            return x
        x = jnp.mean(x, axis=(1, 2))
        return BNLinear(self.num_classes, name='head', **c)(x, train)


# ----------------------------------------------------------------------------------------------
# Variants and factory
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Variant:
    embed_dim: tuple[int, int, int]
    depth: tuple[int, int, int]
    num_heads: tuple[int, int, int]
    kernels: tuple[int, int, int, int]


VARIANTS: dict[str, Variant] = {
    'm0': Variant((64, 128, 192), (1, 2, 3), (4, 4, 4), (5, 5, 5, 5)),
    'm1': Variant((128, 144, 192), (1, 2, 3), (2, 3, 3), (7, 5, 3, 3)),
    'm2': Variant((128, 192, 224), (1, 2, 3), (4, 3, 2), (7, 5, 3, 3)),
    'm3': Variant((128, 240, 320), (1, 2, 3), (4, 3, 4), (5, 5, 5, 5)),
    'm4': Variant((128, 256, 384), (1, 2, 3), (4, 4, 4), (7, 5, 3, 3)),
    'm5': Variant((192, 288, 384), (1, 3, 4), (3, 3, 4), (7, 5, 3, 3)),
    # Not a released size: one block per stage, two heads. For smoke runs and multi-process tests,
    # where compiling the train step (about half of M0's time on CPU) is most of the run.
    'tiny': Variant((32, 48, 64), (1, 1, 1), (2, 2, 2), (3, 3, 3, 3)),
}


def efficientvit(variant: str = 'm5', *, num_classes: int = 1000, img_size: int = 224,
                 fused: bool = False, remat: bool = False,
                 dtype: Any = jnp.float32) -> EfficientViT:
    """Build EfficientViT-M0...M5 or `tiny` (`num_classes=0`: unpooled feature extractor;
    `remat`: recompute activations in the backward pass, see `gsvit_jax.models.remat`)."""
    if variant not in VARIANTS:
        raise ValueError(f'unknown EfficientViT variant {variant!r}; choose from {sorted(VARIANTS)}')
    v = VARIANTS[variant]
    return EfficientViT(v.embed_dim, v.depth, v.num_heads, v.kernels, img_size=img_size,
                        num_classes=num_classes, fused=fused, remat=remat, dtype=dtype)
