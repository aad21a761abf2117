"""A trained phase model (frozen encoder + head) and its predictions, from latents or frames.

`PhaseModel.from_workdir` rebuilds a run's model from its `config.json` and newest checkpoint;
`predict_latents` gives per-second phase probabilities for a whole video (the causal TCN sees only
the past at every second, so these equal what it gives live, second by second, via `online`).
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from gsvit_jax.models.efficientvit import EfficientViT, stage_resolutions
from gsvit_jax.models.phase_head import PhaseHead
from gsvit_jax.models.temporal import CausalTCN
from gsvit_jax.phase.encoder import build_encoder, encode
from gsvit_jax.phase.features import VideoFeatures
from gsvit_jax.phase.steps import normalize
from gsvit_jax.train.init import read_orbax_tree

CHUNK = 512  # frames per head call: inputs are padded to a multiple, so jit compiles rarely


def build_head(config: ConfigDict) -> PhaseHead | CausalTCN:
    head = config.head
    if head.kind == 'mlp':
        return PhaseHead(hidden=tuple(head.hidden), dropout=head.dropout)
    if head.kind == 'temporal':
        return CausalTCN(features=head.tcn_features, num_layers=head.tcn_layers,
                         num_stages=head.tcn_stages, dropout=head.tcn_dropout,
                         input_dropout=head.input_dropout)
    raise ValueError(f'head.kind: unknown {head.kind!r}; expected mlp or temporal')


@flax.struct.dataclass
class PhaseWeights:
    """What inference needs of a trained run (a `PhaseState` has the same fields)."""

    params: Any  # head
    normalizer: Any  # {'mean', 'scale'} of the head's input
    encoder: Any  # frozen encoder variables


def host_weights(state: Any) -> PhaseWeights:
    """Head and normaliser of a (replicated, possibly multi-host) state as local numpy, so one
    process can predict without the others taking part."""
    params, normalizer = jax.device_get((state.params, state.normalizer))
    return PhaseWeights(params, normalizer, None)


@dataclasses.dataclass(frozen=True)
class PhaseModel:
    encoder: EfficientViT
    head: PhaseHead | CausalTCN
    kind: str
    pooled: bool

    @classmethod
    def from_config(cls, config: ConfigDict) -> 'PhaseModel':
        return cls(build_encoder(config.encoder.variant, config.data.image_size),
                   build_head(config), config.head.kind, config.head.pooled)

    @classmethod
    def from_workdir(cls, workdir: str | pathlib.Path) -> tuple['PhaseModel', PhaseWeights]:
        """The model and weights of a trained run (its config.json and newest checkpoint)."""
        from gsvit_jax.phase.train import load_run_config
        config = load_run_config(workdir)
        tree = read_orbax_tree(pathlib.Path(workdir).absolute())
        return cls.from_config(config), PhaseWeights(tree['params'], tree['normalizer'],
                                                     tree['encoder'])

    @property
    def image_size(self) -> int:
        return self.encoder.img_size

    @property
    def channels(self) -> int:
        return self.encoder.embed_dim[-1]

    @property
    def pooled_channels(self) -> int | None:
        return self.channels if self.pooled else None

    @property
    def latent_dim(self) -> int:
        """Head input size: C pooled, else C*h*w (GSViT: 384 or 6144)."""
        side = stage_resolutions(self.image_size)[-1]
        return self.channels if self.pooled else self.channels * side * side

    @functools.cached_property
    def _logits(self) -> Callable:
        if self.kind == 'temporal':
            return jax.jit(lambda w, x: self.head.apply(
                {'params': w.params}, normalize(x, w.normalizer)[None])[-1, 0])
        return jax.jit(lambda w, x: self.head.apply({'params': w.params},
                                                    normalize(x, w.normalizer)))

    @functools.cached_property
    def encode_images(self) -> Callable:
        """(encoder variables, uint8 BGR (B, S, S, 3)) -> latents (B, D), jitted."""
        return jax.jit(lambda v, x: encode(self.encoder, v, x, self.pooled))

    def predict_latents(self, weights: PhaseWeights, latents: np.ndarray) -> np.ndarray:
        """(T, D) latents of one video -> (T, 7) probabilities."""
        n = len(latents)
        if self.kind == 'temporal':  # one causal pass over the end-padded video
            padded = np.zeros((-(-n // CHUNK) * CHUNK, latents.shape[1]), np.float32)
            padded[:n] = latents
            return np.asarray(jax.nn.softmax(self._logits(weights, padded)))[:n]
        out = []
        for start in range(0, n, CHUNK):
            chunk = np.zeros((CHUNK, latents.shape[1]), np.float32)
            part = latents[start:start + CHUNK]
            chunk[:len(part)] = part
            out.append(np.asarray(jax.nn.softmax(self._logits(weights, chunk)))[:len(part)])
        return np.concatenate(out)

    def predict_videos(self, weights: PhaseWeights, videos: Mapping[str, VideoFeatures]
                       ) -> dict[str, np.ndarray]:
        """video id -> (T, 7) probabilities."""
        return {vid: self.predict_latents(weights, v.latent) for vid, v in videos.items()}

    def frame_accuracy(self, state: Any, videos: Mapping[str, VideoFeatures]) -> float:
        """Fraction of frames whose argmax equals the label, over all videos."""
        probs = self.predict_videos(state, videos)
        correct = sum(int(np.sum(probs[v].argmax(-1) == videos[v].phase)) for v in videos)
        return correct / sum(len(v) for v in videos.values())

    def online(self, weights: PhaseWeights, batch: int = 1) -> 'OnlinePredictor':
        return OnlinePredictor(self, weights, batch)


class OnlinePredictor:
    """Live use: feed one latent per second, get that second's phase probabilities at once.

    The MLP head needs no history; the causal TCN keeps per-layer histories, so each update costs
    the same however long the operation has run."""

    def __init__(self, model: PhaseModel, weights: PhaseWeights, batch: int = 1):
        self.model, self.weights = model, weights
        if model.kind == 'temporal':
            self.histories = model.head.initial_histories(batch)
            self._step = jax.jit(lambda w, x, h: model.head.apply(
                {'params': w.params}, normalize(x, w.normalizer), h, method=CausalTCN.step))
        else:
            self._step = jax.jit(lambda w, x: model.head.apply(
                {'params': w.params}, normalize(x, w.normalizer)))

    def update(self, latent: np.ndarray) -> np.ndarray:
        """(B, D) latents of the current second -> (B, 7) probabilities."""
        latent = jnp.asarray(latent, jnp.float32)
        if self.model.kind == 'temporal':
            logits, self.histories = self._step(self.weights, latent, self.histories)
        else:
            logits = self._step(self.weights, latent)
        return np.asarray(jax.nn.softmax(logits))
