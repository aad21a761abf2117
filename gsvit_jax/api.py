"""The front door: `load_encoder` gives an `Encoder` that turns frames into GSViT features,
`load_autoencoder` the pre-training autoencoder, and `save_weights` writes variables for
PyTorch. The rest of the package is built from these pieces; this module only puts them
together the way a user reaches for them."""
from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from gsvit_jax.convert.files import save_torch_file
from gsvit_jax.convert.state_dict import abstract_variables, to_torch
from gsvit_jax.models.decoder import DEFAULT_WIDTHS, GSViTAutoencoder, gsvit_autoencoder
from gsvit_jax.models.efficientvit import EfficientViT, efficientvit
from gsvit_jax.models.fold import cast_kernels, fold_batchnorm
from gsvit_jax.models.gsvit import flatten_latent
from gsvit_jax.models.random_init import random_variables
from gsvit_jax.phase.encoder import fingerprint, load_encoder_variables, padded_size
from gsvit_jax.train.init import load_initial_variables
from gsvit_jax.preprocess import (ChannelOrder, as_frame_batch, check_channel_order,
                                  resize_to_model_input)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _FrameModel:
    """A model, its variables and how frames reach it; jitted programs cached per output kind."""

    model: Any
    variables: Mapping[str, Any]
    channel_order: ChannelOrder = 'rgb'
    batch_size: int = 64
    source: str = 'random'
    _programs: dict = dataclasses.field(default_factory=dict, init=False, repr=False,
                                        compare=False)  # kind -> Program

    def __post_init__(self):
        check_channel_order(self.channel_order)
        if self.batch_size < 1:
            raise ValueError(f'batch_size must be at least 1, got {self.batch_size}')

    def _apply(self, kind: str, head: Callable, frames: np.ndarray) -> np.ndarray:
        """`head(model(frames))` in batches, compiled on first use of `kind`."""
        if kind not in self._programs:
            self._programs[kind] = _compile(self.model, self.variables, self.channel_order, head)
        return _map_batches(self._programs[kind], frames, self.batch_size)


@dataclasses.dataclass(frozen=True)
class Encoder(_FrameModel):
    """A GSViT (EfficientViT) encoder with its weights, ready to encode frames.

    `features`, `latent` and `pooled` take uint8 frames (H, W, 3) or (N, H, W, 3) of any size in
    `channel_order`, and return numpy arrays. Frames are encoded `batch_size` at a time by one
    jitted program, the batch split over this process's devices.
    """

    model: EfficientViT
    # the fingerprint of the weights before `cast_kernels` (a bfloat16 encoder's kernels are a
    # cast copy): one set of weights keeps one fingerprint, whichever release cast them
    weights_fingerprint: str | None = None

    def __post_init__(self):
        super().__post_init__()
        expected = jax.tree_util.tree_structure(abstract_variables(self.model))
        if jax.tree_util.tree_structure(dict(self.variables)) != expected:
            if self.model.fused:
                raise ValueError('a fused encoder takes BatchNorm-folded variables: pass '
                                 'fold_batchnorm(variables), or use an unfused model')
            raise ValueError('the variables do not fit this unfused encoder (conv + BatchNorm '
                             'per layer); folded variables need a fused model (fused=True), and '
                             'the variant and img_size must be those of the weights')

    @property
    def img_size(self) -> int:
        return self.model.img_size

    @property
    def fingerprint(self) -> str:
        """16 hex digits identifying the weights (and settings that change the output)."""
        return self.weights_fingerprint or _fingerprint(self.model, self.variables)

    def features(self, frames: np.ndarray) -> np.ndarray:
        """(N, h, w, C) unpooled feature maps; GSViT at 224 px: (N, 4, 4, 384)."""
        return self._run('features', frames)

    def latent(self, frames: np.ndarray) -> np.ndarray:
        """(N, C*h*w) flattened in PyTorch's channel-major order; GSViT: (N, 6144)."""
        return self._run('latent', frames)

    def pooled(self, frames: np.ndarray) -> np.ndarray:
        """(N, C) spatial mean of the features; GSViT: (N, 384)."""
        return self._run('pooled', frames)

    def _run(self, output: str, frames: np.ndarray) -> np.ndarray:
        return self._apply(output, _OUTPUTS[output], frames)


_OUTPUTS: dict[str, Callable] = {
    'features': lambda features: features,
    'latent': flatten_latent,
    'pooled': lambda features: jnp.mean(features, axis=(1, 2)),
}


@dataclasses.dataclass(frozen=True)
class Autoencoder(_FrameModel):
    """GSViT's pre-training autoencoder (encoder + decoder) with its weights: `predict(frames)`
    gives the frame it expects `gap_s` later (1 s for GSViT)."""

    model: GSViTAutoencoder
    batch_size: int = 16

    def predict(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames (N, H, W, 3) of any size -> predicted next frames, float32 in [0, 1],
        (N, img_size, img_size, 3), in `channel_order` (the input's)."""
        flip = self.channel_order == 'rgb'  # the model works in BGR
        return self._apply('predict', lambda y: y[..., ::-1] if flip else y, frames)


Program = tuple[Callable, int, Callable]  # (uint8 batch -> output, devices, empty output)


def _compile(model: Any, variables: Mapping[str, Any], channel_order: str,
             head: Callable) -> Program:
    """`head(model(frames))` jitted over this process's devices (compiled once per batch
    shape), the batch split on the `data` axis."""
    from gsvit_jax.data.sharding import batch_sharding, data_mesh, replicated
    mesh = data_mesh(jax.local_devices())

    def forward(variables, frames):
        return head(model.apply(variables, resize_to_model_input(frames, channel_order,
                                                                 model.img_size)))

    fn = jax.jit(forward, in_shardings=(replicated(mesh), batch_sharding(mesh)),
                 out_shardings=batch_sharding(mesh))
    placed = jax.device_put(dict(variables), replicated(mesh))
    sharding = batch_sharding(mesh)

    def run(batch: np.ndarray) -> np.ndarray:
        return np.asarray(jax.device_get(fn(placed, jax.device_put(batch, sharding))), np.float32)

    def empty() -> np.ndarray:
        frame = jax.ShapeDtypeStruct((1, model.img_size, model.img_size, 3), jnp.uint8)
        return np.zeros((0, *jax.eval_shape(forward, dict(variables), frame).shape[1:]),
                        np.float32)

    return run, mesh.devices.size, empty


def _map_batches(program: Program, frames: np.ndarray, batch_size: int) -> np.ndarray:
    """The program over `frames` in batches; a ragged last batch is padded to a power of two,
    so a few program sizes are compiled, not one per length."""
    run, devices, empty = program
    frames = as_frame_batch(np.asarray(frames))
    chunks = []
    for start in range(0, len(frames), batch_size):
        batch = frames[start:start + batch_size]
        n = len(batch)
        pad = padded_size(n, devices) - n
        if pad:
            batch = np.concatenate([batch, np.repeat(batch[-1:], pad, axis=0)])
        chunks.append(run(batch)[:n])
    return np.concatenate(chunks) if chunks else empty()


def load_encoder(weights: str | pathlib.Path | None = None, *, variant: str = 'm5',
                 img_size: int = 224, fused: bool = True, dtype: Any = jnp.float32,
                 channel_order: ChannelOrder = 'rgb', batch_size: int = 64,
                 seed: int = 0) -> Encoder:
    """The GSViT encoder with weights from `weights`, ready for `features`/`latent`/`pooled`.

    `weights`: `GSViT.pkl`, an EfficientViT/timm `.pth`, a `.safetensors` file, an Orbax
    checkpoint directory (pre-training, phase or `gsvit-convert` output), or None for random
    weights (a warning: for trying the API only). Decoder and classifier keys are dropped.
    `fused`: BatchNorm folded into the convolutions (inference; same outputs to ~1e-6).
    `dtype`: the computation's dtype (e.g. `jnp.bfloat16`); a fused encoder's conv / linear kernels
    are cast to it once (`cast_kernels`: the same outputs, no per-call conversion), the rest of
    the weights stay float32.
    """
    model = efficientvit(variant, num_classes=0, img_size=img_size, dtype=dtype)
    if weights is None:
        log.warning('load_encoder: no weights given, using a RANDOM encoder')
        variables, source = random_variables(model, img_size, seed), 'random'
    else:
        path = pathlib.Path(weights)
        if not path.exists():
            raise FileNotFoundError(f'no weights file or checkpoint directory at {path}')
        variables, source = load_encoder_variables(str(path), model), str(path)
    variables = {k: v for k, v in variables.items() if k in ('params', 'batch_stats')}
    weights_fingerprint = None
    if fused:
        model = efficientvit(variant, num_classes=0, img_size=img_size, fused=True, dtype=dtype)
        variables = fold_batchnorm(variables)
        if jnp.dtype(dtype) != jnp.float32:
            weights_fingerprint = _fingerprint(model, variables)
            variables = cast_kernels(variables, dtype)
    return Encoder(model, variables, channel_order, batch_size, source, weights_fingerprint)


def _fingerprint(model: EfficientViT, variables: Mapping[str, Any]) -> str:
    """`fingerprint` of an encoder's weights with the settings that change its output."""
    return fingerprint(variables, img_size=model.img_size, fused=model.fused,
                       dtype=str(jnp.dtype(model.dtype)))


def load_autoencoder(weights: str | pathlib.Path | None = None, *, variant: str = 'm5',
                     img_size: int = 224, decoder_widths: tuple[int, ...] = DEFAULT_WIDTHS,
                     predict_change: bool = False, dtype: Any = jnp.float32,
                     channel_order: ChannelOrder = 'rgb', batch_size: int = 16,
                     seed: int = 0) -> Autoencoder:
    """GSViT's autoencoder: `GSViT.pkl` (encoder and decoder), an encoder-only file (the decoder
    stays random, with a warning), a pre-training Orbax workdir, or None (random)."""
    model = gsvit_autoencoder(variant, img_size, decoder_widths, predict_change, dtype)
    variables = random_variables(model, img_size, seed)
    source = 'random'
    if weights is None:
        log.warning('load_autoencoder: no weights given, using a RANDOM autoencoder')
    else:
        path = pathlib.Path(weights)
        if not path.exists():
            raise FileNotFoundError(f'no weights file or checkpoint directory at {path}')
        variables, source = load_initial_variables(str(path), variables), str(path)
    return Autoencoder(model, variables, channel_order, batch_size, source)


def save_weights(variables: Mapping[str, Any], path: str | pathlib.Path,
                 layout: str = 'msra') -> None:
    """Unfused encoder (or autoencoder) variables -> a PyTorch state_dict file (`.safetensors`,
    or `.pth`/`.pt`/`.pkl`/`.bin` through torch.save), keys in `layout` ('gsvit', 'msra' or
    'timm'); written atomically."""
    save_torch_file(to_torch(variables, layout), path)
