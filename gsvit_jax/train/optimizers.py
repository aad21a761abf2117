"""Optimisers and learning-rate schedules from a config (the original recipe is the default)."""
from __future__ import annotations

import optax
from ml_collections import ConfigDict

from gsvit_jax.kernels import adam


def make_schedule(config: ConfigDict, total_steps: int) -> optax.Schedule:
    """`linear`: lr -> end_lr over all steps (GSViT: 1e-3 -> 1e-5); `warmup_cosine`: linear warm-up
    then cosine decay to end_lr; `exponential`: lr * decay_rate ** (step / decay_steps)."""
    kind = config.schedule
    if kind == 'linear':
        return optax.linear_schedule(config.lr, config.end_lr, max(total_steps, 1))
    if kind == 'warmup_cosine':
        return optax.warmup_cosine_decay_schedule(0.0, config.lr, config.warmup_steps,
                                                  max(total_steps, config.warmup_steps + 1),
                                                  end_value=config.end_lr)
    if kind == 'exponential':
        return optax.exponential_decay(config.lr, config.decay_steps, config.decay_rate)
    if kind == 'constant':
        return optax.constant_schedule(config.lr)
    raise ValueError(f'optimizer.schedule: unknown {kind!r}; expected linear, warmup_cosine, '
                     'exponential or constant')


def make_optimizer(config: ConfigDict, total_steps: int) -> tuple[optax.GradientTransformation,
                                                                  optax.Schedule]:
    """Adam (GSViT's choice, no weight decay) or AdamW, optional global-norm gradient clipping.
    Plain Adam is `kernels.adam.adam`: optax's, with a one-pass update on the CPU (`fused_step`)."""
    schedule = make_schedule(config, total_steps)
    if config.name == 'adam' and not config.get('grad_clip'):
        return adam.adam(schedule, b1=config.b1, b2=config.b2, eps=config.eps), schedule
    if config.name == 'adam':
        tx = optax.adam(schedule, b1=config.b1, b2=config.b2, eps=config.eps)
    elif config.name == 'adamw':
        tx = optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                         weight_decay=config.weight_decay)
    else:
        raise ValueError(f'optimizer.name: unknown {config.name!r}; expected adam or adamw')
    if config.get('grad_clip'):
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip), tx)
    return tx, schedule


def takes_weight_grad_factors(tx: optax.GradientTransformation, params) -> bool:
    """Whether `apply_optimizer(tx, ...)` forms factored weight gradients (`matmul.WeightGrad`)
    inside its update rather than as arrays first: the fused Adam's kernel."""
    return hasattr(tx, 'fused_step') and adam.runs_fused(params)


def apply_optimizer(tx: optax.GradientTransformation, grads, opt_state, params) -> tuple:
    """(new params, new optimizer state): `tx.fused_step` where it has one, else optax's update
    then apply."""
    fused = getattr(tx, 'fused_step', None)
    if fused is not None:
        return fused(grads, opt_state, params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def optimizer_config(**overrides) -> ConfigDict:
    """Defaults = the original GSViT recipe: Adam, lr linearly 1e-3 -> 1e-5, no clipping."""
    config = ConfigDict(dict(name='adam', lr=1e-3, end_lr=1e-5, schedule='linear', b1=0.9,
                             b2=0.999, eps=1e-8, weight_decay=1e-4, warmup_steps=0,
                             decay_steps=1000, decay_rate=0.95, grad_clip=0.0))
    config.update(overrides)
    return config
