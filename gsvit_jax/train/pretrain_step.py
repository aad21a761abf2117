"""Next-frame prediction: the loss and the pure-functional, jit-compiled train and eval steps."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from gsvit_jax.data.transforms import to_model_input
from gsvit_jax.models.efficientvit import LINEAR_INPUTS, OUTPUT_PROBES
from gsvit_jax.train import weight_grads
from gsvit_jax.train.optimizers import apply_optimizer, takes_weight_grad_factors
from gsvit_jax.train.state import TrainState

LOSSES = ('l1', 'mse')


def targets(batch: dict[str, jnp.ndarray], predict_change: bool) -> jnp.ndarray:
    """Next frame in [0, 1], or the change next - current in [-1, 1] (the tanh variant)."""
    nxt = to_model_input(batch['next_frame'])
    return nxt - to_model_input(batch['frame']) if predict_change else nxt


def reconstruction_loss(prediction: jnp.ndarray, target: jnp.ndarray, kind: str) -> jnp.ndarray:
    """Mean absolute (GSViT: `l1`) or squared (`mse`) error over all pixels, in float32."""
    diff = prediction.astype(jnp.float32) - target.astype(jnp.float32)
    if kind == 'l1':
        return jnp.mean(jnp.abs(diff))
    if kind == 'mse':
        return jnp.mean(jnp.square(diff))
    raise ValueError(f'loss: unknown {kind!r}; expected one of {LOSSES}')


def psnr(prediction: jnp.ndarray, target: jnp.ndarray, value_range: float = 1.0) -> jnp.ndarray:
    """Mean over images of the peak signal-to-noise ratio (dB)."""
    mse = jnp.mean(jnp.square(prediction.astype(jnp.float32) - target), axis=(1, 2, 3))
    return jnp.mean(10.0 * jnp.log10(value_range ** 2 / jnp.maximum(mse, 1e-10)))


def make_train_step(model: Any, tx: optax.GradientTransformation, schedule: optax.Schedule, *,
                    loss: str = 'l1', predict_change: bool = False) -> Callable:
    """(state, batch) -> (state, metrics). A step whose loss, gradients or learning rate are not
    finite leaves the state unchanged and reports `finite = 0`, so the caller stops with the last
    good state.

    The updates themselves are not checked (memory: that check needed every update at once before
    the first parameter could be written): with finite gradients, Adam and AdamW (eps > 0, with or
    without global-norm clipping) give finite updates for a finite learning rate. The new state is
    chosen with `lax.cond`, not `where(finite, new, old)` per leaf (memory): under the cond XLA
    updates each donated parameter and moment in place; with the selects XLA:CPU copied the Adam
    moments (2.5 GiB at full size) before the forward pass.

    Where the optimizer forms factored weight gradients itself (the fused Adam on the CPU), large
    linear layers' gradients stay factored (`weight_grads`): the decoder's 1.2 GB one is never
    stored.
    """

    def step(state: TrainState, batch: dict[str, jnp.ndarray]):
        x = to_model_input(batch['frame'])
        target = targets(batch, predict_change)

        variables = {'params': state.params, 'batch_stats': state.batch_stats}
        probes = (weight_grads.output_probes(model.apply, variables, x, train=True,
                                             mutable=['batch_stats'])
                  if takes_weight_grad_factors(tx, state.params) else {})

        def loss_fn(params, probes):
            prediction, updates = model.apply(
                {**variables, 'params': params, OUTPUT_PROBES: probes}, x, train=True,
                mutable=['batch_stats', LINEAR_INPUTS] if probes else ['batch_stats'])
            return reconstruction_loss(prediction, target, loss), (prediction, updates)

        (value, (prediction, updates)), (grads, probe_grads) = jax.value_and_grad(
            loss_fn, argnums=(0, 1), has_aux=True)(state.params, probes)
        if probes:
            grads = weight_grads.factored(grads, updates[LINEAR_INPUTS], probe_grads)
        grad_norm = weight_grads.global_norm(grads)
        lr = schedule(state.step)
        finite = jnp.isfinite(value) & jnp.isfinite(grad_norm) & jnp.isfinite(lr)

        def apply_updates(state: TrainState) -> TrainState:
            params, opt_state = apply_optimizer(tx, grads, state.opt_state, state.params)
            return state.replace(step=state.step + 1, params=params,
                                 batch_stats=updates['batch_stats'], opt_state=opt_state)

        new = jax.lax.cond(finite, apply_updates, lambda state: state, state)
        scale = 2.0 if predict_change else 1.0
        metrics = {'loss': value, 'grad_norm': grad_norm, 'lr': lr,
                   'psnr': psnr(prediction, target, scale), 'finite': finite.astype(jnp.float32)}
        return new, metrics

    return step


def make_eval_step(model: Any, *, loss: str = 'l1', predict_change: bool = False) -> Callable:
    """(state, batch) -> (metrics, prediction) with BatchNorm running statistics (eval mode)."""

    def step(state: TrainState, batch: dict[str, jnp.ndarray]):
        prediction = model.apply(state.variables, to_model_input(batch['frame']))
        target = targets(batch, predict_change)
        metrics = {'loss': reconstruction_loss(prediction, target, loss),
                   'psnr': psnr(prediction, target, 2.0 if predict_change else 1.0)}
        return metrics, prediction

    return step
