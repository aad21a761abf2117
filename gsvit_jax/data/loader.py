"""Grain loaders: seeded shuffling, per-process shares of every global batch, worker processes,
checkpointable state."""
from __future__ import annotations

import sys
from typing import Any, Sequence

import grain
import jax
from absl import flags


class GlobalBatchSampler:
    """Each of `count` processes reads its block of every global batch of one seeded stream.

    One shuffled stream (an unsharded `IndexSampler`) is cut into global batches of
    `per_process * count` records; process p reads records [p * per_process, (p + 1) * per_process)
    of each. So the processes' batches are disjoint, together they are exactly the global batch a
    single process would read, and the run does not depend on how many processes there are.
    Grain asks process p for sampler indices k = j * count + p (its j-th record); with W worker
    processes, worker w reads records j = w, w + W, ... and batches them itself, so the process's
    t-th batch is worker t % W's (t // W)-th.
    """

    def __init__(self, stream: grain.samplers.IndexSampler, per_process: int, count: int,
                 workers: int = 0):
        self._stream, self._per, self._count = stream, per_process, count
        self._workers = max(1, workers)
        global_batch = per_process * count
        self._len = (sys.maxsize if len(stream) == sys.maxsize
                     else len(stream) // global_batch * global_batch)  # whole global batches

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:  # Grain compares it with the checkpointed one on restore
        return (f'GlobalBatchSampler({self._stream!r}, per_process={self._per}, '
                f'processes={self._count}, workers={self._workers})')

    def position(self, k: int) -> int:
        """Sampler index k (process k % count, its (k // count)-th record) -> stream position."""
        j, process = divmod(k, self._count)
        in_worker, worker = divmod(j, self._workers)
        worker_batch, row = divmod(in_worker, self._per)
        batch = worker_batch * self._workers + worker  # the process's (and global) batch number
        return (batch * self._count + process) * self._per + row

    def __getitem__(self, k: int) -> Any:
        if not 0 <= k < self._len:
            raise IndexError(f'sampler index {k} out of range [0, {self._len})')
        record = self._stream[self.position(k)]  # its key and rng: the same in every process count
        return grain.RecordMetadata(index=k, record_key=record.record_key, rng=record.rng)


def make_loader(source: Sequence[Any], operations: Sequence[Any], *, global_batch_size: int,
                seed: int, shuffle: bool = True, num_epochs: int | None = None,
                worker_count: int = 0, drop_remainder: bool = True,
                shard: tuple[int, int] | None = None) -> grain.DataLoader:
    """A `grain.DataLoader` yielding this process's share of each global batch.

    Records are shuffled with `seed` (same order on every run), each global batch is split between
    JAX processes (`GlobalBatchSampler`), transformed by `operations` in `worker_count` processes,
    and batched to `global_batch_size // jax.process_count()`. `iter(loader).get_state()` /
    `set_state()` resume exactly; `num_epochs=None` repeats forever. `shard=(index, count)`
    overrides the process split. With `drop_remainder=False` (one process only) a last partial
    batch is kept.
    """
    index, count = shard or (jax.process_index(), jax.process_count())
    if global_batch_size % count:
        raise ValueError(f'global batch {global_batch_size} is not divisible by the '
                         f'{count} JAX processes')
    if not drop_remainder and count > 1:
        raise ValueError('drop_remainder=False needs a single process (a partial global batch '
                         'cannot be split evenly)')
    if worker_count and not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # Grain workers read absl flags; a library caller may not parse
    per_process = global_batch_size // count
    stream = grain.samplers.IndexSampler(num_records=len(source), shuffle=shuffle, seed=seed,
                                         num_epochs=num_epochs)
    sampler = (GlobalBatchSampler(stream, per_process, count, worker_count) if drop_remainder
               else stream)
    batch = grain.transforms.Batch(per_process, drop_remainder=drop_remainder)
    return grain.DataLoader(data_source=source, sampler=sampler,
                            operations=[*operations, batch], worker_count=worker_count,
                            shard_options=grain.sharding.ShardOptions(index, count,
                                                                      drop_remainder=True))
