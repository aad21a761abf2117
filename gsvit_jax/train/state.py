"""The training state: one pytree that is jit-ed, sharded and checkpointed as a whole."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jnp.ndarray  # raw uint32 key data (checkpoints store it as a plain array)

    @property
    def variables(self) -> dict[str, Any]:
        return {'params': self.params, 'batch_stats': self.batch_stats}


def create_train_state(variables: dict[str, Any], tx: optax.GradientTransformation,
                       seed: int) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                      batch_stats=variables.get('batch_stats', {}),
                      opt_state=tx.init(variables['params']),
                      rng=jax.random.key_data(jax.random.key(seed)))
