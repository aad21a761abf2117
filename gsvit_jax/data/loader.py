"""Grain loaders: seeded shuffling, per-process sharding, worker processes, checkpointable state."""
from __future__ import annotations

from typing import Any, Sequence

import grain
import jax
from absl import flags


def make_loader(source: Sequence[Any], operations: Sequence[Any], *, global_batch_size: int,
                seed: int, shuffle: bool = True, num_epochs: int | None = None,
                worker_count: int = 0, drop_remainder: bool = True,
                shard: tuple[int, int] | None = None) -> grain.DataLoader:
    """A `grain.DataLoader` yielding this process's share of each global batch.

    Records are shuffled with `seed` (same order on every run), split between JAX processes
    (multi-host), transformed by `operations` in `worker_count` processes, and batched to
    `global_batch_size // jax.process_count()`. `iter(loader).get_state()` / `set_state()` resume
    exactly; `num_epochs=None` repeats forever. `shard=(index, count)` overrides the process split.
    """
    processes = shard[1] if shard else jax.process_count()
    if global_batch_size % processes:
        raise ValueError(f'global batch {global_batch_size} is not divisible by the '
                         f'{processes} JAX processes')
    if worker_count and not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # Grain workers read absl flags; a library caller may not parse
    sampler = grain.samplers.IndexSampler(
        num_records=len(source), shuffle=shuffle, seed=seed, num_epochs=num_epochs,
        shard_options=(grain.sharding.ShardOptions(*shard, drop_remainder=True) if shard
                       else grain.sharding.ShardByJaxProcess(drop_remainder=True)))
    batch = grain.transforms.Batch(global_batch_size // processes, drop_remainder=drop_remainder)
    return grain.DataLoader(data_source=source, sampler=sampler,
                            operations=[*operations, batch], worker_count=worker_count)
