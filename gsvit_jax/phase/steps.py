"""Phase recognition: training state and the pure-functional, jit-compiled train steps.

Only the head (MLP or causal TCN) is trained. The encoder's variables ride along in the state so a
checkpoint is self-contained, but a step receives them as a separate, read-only argument, and only
when it encodes frames itself (`features.mode=augmented`), so the encoder's ~700 arrays do not go
in and out of every step (a 256-64 MLP on 8 CPU devices: 25 -> 45 steps/s). No step
differentiates them and the encoder is only applied in eval mode, so its parameters and BatchNorm
statistics stay bit-identical.
"""
from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from gsvit_jax.models.efficientvit import EfficientViT
from gsvit_jax.models.temporal import CausalTCN
from gsvit_jax.phase.encoder import encode
from gsvit_jax.train.optimizers import apply_optimizer


@flax.struct.dataclass
class PhaseState:
    step: jnp.ndarray
    params: Any  # the head's parameters: the only thing the optimiser sees
    opt_state: Any
    rng: jnp.ndarray  # raw uint32 key data
    encoder: Any  # frozen encoder variables {'params', 'batch_stats'}
    normalizer: Any  # fixed latent standardisation {'mean', 'scale'} (D,), see `normalize`


def create_phase_state(head_params: Any, encoder_variables: Any, normalizer: Any,
                       tx: optax.GradientTransformation, seed: int) -> PhaseState:
    return PhaseState(step=jnp.zeros((), jnp.int32), params=head_params,
                      opt_state=tx.init(head_params),
                      rng=jax.random.key_data(jax.random.key(seed)), encoder=encoder_variables,
                      normalizer=normalizer)


def normalize(latent: jnp.ndarray, normalizer: Any) -> jnp.ndarray:
    """(latent - mean) * scale: a fixed affine map (foldable into the head's first layer) that
    puts every latent dimension on the same scale, whatever the encoder's output magnitude."""
    return (latent.astype(jnp.float32) - normalizer['mean']) * normalizer['scale']


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray,
                  mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """Mean softmax cross-entropy over the (masked) positions, in float32."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    if mask is None:
        return jnp.mean(losses)
    return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def smoothing_loss(logits: jnp.ndarray, mask: jnp.ndarray, tau: float = 4.0) -> jnp.ndarray:
    """MS-TCN's truncated MSE between consecutive log-probabilities (discourages flicker)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    delta = jnp.square(logp[:, 1:] - jax.lax.stop_gradient(logp[:, :-1]))
    pair = (mask[:, 1:] * mask[:, :-1])[..., None]
    return jnp.sum(jnp.minimum(delta, tau ** 2) * pair) / jnp.maximum(
        jnp.sum(pair) * logits.shape[-1], 1.0)


def _apply_update(state: PhaseState, tx, grads, loss, rng
                  ) -> tuple[PhaseState, jnp.ndarray, jnp.ndarray]:
    """Adam step on the head; a non-finite loss/gradient leaves the state as it was."""
    grad_norm = optax.tree.norm(grads)
    params, opt_state = apply_optimizer(tx, grads, state.opt_state, state.params)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree_util.tree_map(  # noqa: E731
        lambda n, o: jnp.where(finite, n, o), new, old)
    new = state.replace(step=state.step + jnp.where(finite, 1, 0),
                        params=keep(params, state.params),
                        opt_state=keep(opt_state, state.opt_state),
                        rng=jnp.where(finite, rng, state.rng))
    return new, grad_norm, finite


def _split_rng(state: PhaseState) -> tuple[jnp.ndarray, jnp.ndarray]:
    key = jax.random.wrap_key_data(state.rng)
    key, dropout = jax.random.split(jax.random.fold_in(key, state.step))
    return jax.random.key_data(key), dropout


def make_head_step(head: Any, tx: optax.GradientTransformation, schedule: optax.Schedule,
                   encoder: EfficientViT | None = None, pooled: bool = False) -> Callable:
    """(state, encoder variables, batch) -> (state, metrics) for the single-frame head. Batch:
    `latent` (B, D) from the feature cache (encoder variables None), or `image` (B, S, S, 3) uint8
    BGR encoded here by the frozen `encoder`. `state.encoder` is not read."""

    def step(state: PhaseState, encoder_variables: Any, batch: dict[str, jnp.ndarray]):
        rng, dropout = _split_rng(state)
        if encoder is None:
            latent = batch['latent']
        else:
            latent = encode(encoder, encoder_variables, batch['image'], pooled)
        latent = normalize(latent, state.normalizer)
        labels = batch['phase']

        def loss_fn(params):
            logits = head.apply({'params': params}, latent, train=True, rngs={'dropout': dropout})
            return cross_entropy(logits, labels), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new, grad_norm, finite = _apply_update(state, tx, grads, loss, rng)
        metrics = {'loss': loss, 'accuracy': jnp.mean(jnp.argmax(logits, -1) == labels),
                   'grad_norm': grad_norm, 'lr': schedule(state.step),
                   'finite': finite.astype(jnp.float32)}
        return new, metrics

    return step


def make_temporal_step(model: CausalTCN, tx: optax.GradientTransformation,
                       schedule: optax.Schedule, smooth_weight: float = 0.15) -> Callable:
    """(state, None, batch) -> (state, metrics) for the causal TCN on whole videos: `latent`
    (B, T, D), `phase` (B, T), `mask` (B, T) (1 on real frames, 0 on the end padding)."""

    def step(state: PhaseState, encoder_variables: None, batch: dict[str, jnp.ndarray]):
        del encoder_variables  # always trained on cached latents
        rng, dropout = _split_rng(state)
        labels, mask = batch['phase'], batch['mask'].astype(jnp.float32)

        def loss_fn(params):
            latent = normalize(batch['latent'], state.normalizer)
            stages = model.apply({'params': params}, latent, train=True,
                                 rngs={'dropout': dropout})
            loss = sum(cross_entropy(s, labels, mask) + smooth_weight * smoothing_loss(s, mask)
                       for s in stages)
            return loss, stages[-1]

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new, grad_norm, finite = _apply_update(state, tx, grads, loss, rng)
        correct = (jnp.argmax(logits, -1) == labels) * mask
        metrics = {'loss': loss, 'accuracy': jnp.sum(correct) / jnp.maximum(jnp.sum(mask), 1.0),
                   'grad_norm': grad_norm, 'lr': schedule(state.step),
                   'finite': finite.astype(jnp.float32)}
        return new, metrics

    return step
