"""Several processes, one program: `jax.distributed` started from the config, the environment or a
cluster manager, and the checks every multi-process run makes before any slow work.

Where the settings come from, first found wins:
1. `config.distributed.{coordinator,num_processes,process_id}` (`--config.distributed.*` flags);
2. the environment: `JAX_COORDINATOR_ADDRESS` (read by JAX itself), `JAX_NUM_PROCESSES`,
   `JAX_PROCESS_ID` (read here);
3. JAX's cluster auto-detection (SLURM, Open MPI, Kubernetes, Cloud TPU) for whatever is unset.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pathlib
import sys
import threading
from typing import Any, Callable, Iterator, Mapping, TypeVar

import jax
import numpy as np
from ml_collections import ConfigDict

from gsvit_jax import liveness
from gsvit_jax.errors import DistributedError, PeerLostError, exit_with, first_line

log = logging.getLogger(__name__)
T = TypeVar('T')
BARRIER_TIMEOUT_S = 1800  # how long processes wait for each other (compiling, caching)
ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = (
    'JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID')


def distributed_config() -> ConfigDict:
    """The `config.distributed` block of every training config."""
    return ConfigDict(dict(
        coordinator='',  # host:port of process 0 (reachable from every host); '' = env / auto
        num_processes=0,  # 0 = from the environment or the cluster manager
        process_id=-1,  # -1 = from the environment or the cluster manager
        timeout_s=300,  # how long to wait for the coordinator and for every process to join
        barrier_timeout_s=BARRIER_TIMEOUT_S,
        # a process whose watch (gsvit_jax.liveness) is silent this long is declared dead: the
        # others stop with one line naming it and the checkpoint to resume from; 0 = no watch
        peer_timeout_s=60,
        # JAX's own check, the fallback: it ends the others from C++ (SIGABRT, its own message);
        # keep it above peer_timeout_s and the collectives' timeout (gloo: 30 s)
        heartbeat_timeout_s=100,
    ))


def settings(config: ConfigDict) -> ConfigDict:
    """`config.distributed`, or the defaults for a config written without it."""
    return config.get('distributed') or distributed_config()


def requested(config: ConfigDict) -> bool:
    """Multi-process when asked for: `multihost`, a coordinator in the config or the environment."""
    return bool(config.get('multihost') or settings(config).coordinator
                or os.environ.get(ENV_COORDINATOR))


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, '').strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f'{name}={value!r}: expected an integer') from None


def _addresses(config: ConfigDict) -> tuple[str | None, int | None, int | None]:
    given = settings(config)
    coordinator = given.coordinator or os.environ.get(ENV_COORDINATOR) or None
    count = given.num_processes or _env_int(ENV_NUM_PROCESSES)
    index = given.process_id if given.process_id >= 0 else _env_int(ENV_PROCESS_ID)
    if coordinator is not None:
        host, _, port = coordinator.rpartition(':')
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise DistributedError(f'distributed.coordinator={coordinator!r}: expected host:port, '
                                   'e.g. node0.cluster:29500 (process 0 listens on that port)')
    if count is not None and count < 1:
        raise DistributedError(f'distributed.num_processes={count}: expected at least 1')
    if index is not None and count is not None and not 0 <= index < count:
        raise DistributedError(f'distributed.process_id={index}: expected 0..{count - 1} for '
                               f'{count} processes')
    return coordinator, count, index


def _cluster_env() -> Any:
    """The cluster manager JAX would detect here (SLURM, Open MPI, ...), if any."""
    from jax._src import clusters  # JAX's own detection, so we agree with what it will do
    return next((e for e in clusters.ClusterEnv._cluster_types
                 if not e.opt_in_only_method and e.is_env_present()), None)


def _cluster_manager() -> str | None:
    env = _cluster_env()
    return env.__name__ if env else None


def _refuse_unrequested_cluster() -> None:
    """Tasks 1, 2, ... of a cluster job step whose config is single-process would be as many
    independent runs writing into one workdir: they stop. Task 0 may be a batch script's single
    process inside a larger allocation, so it only gets a warning."""
    env = _cluster_env()
    try:
        tasks, task = (env.get_process_count(), env.get_process_id()) if env else (1, 0)
    except Exception:  # noqa: BLE001  a partial environment: JAX would not use it either
        tasks, task = 1, 0
    if tasks <= 1:
        return
    advice = ('add `multihost` to the config argument (e.g. --config=...pretrain.py:multihost) '
              'so the tasks train together, or start one task')
    if task > 0:
        raise DistributedError(f'this is task {task} of {tasks} that {env.__name__} started, but '
                               f'the config is single-process: {advice}')
    log.warning('%s reports %d tasks but the config is single-process: this process trains '
                'alone (%s)', env.__name__, tasks, advice)


def initialize(config: ConfigDict) -> None:
    """Join the run's other processes (or do nothing for a single-process config).

    Must run before anything touches a JAX device. Errors are one line: a missing setting, a
    coordinator that cannot be reached within `distributed.timeout_s`, processes that never join.
    """
    if jax.distributed.is_initialized():
        return
    if not requested(config):
        _refuse_unrequested_cluster()
        return
    coordinator, count, index = _addresses(config)
    manager = _cluster_manager()
    if manager is None and None in (coordinator, count, index):
        missing = [name for name, value in (('coordinator', coordinator),
                                            ('num_processes', count), ('process_id', index))
                   if value is None]
        raise DistributedError(
            f'multi-process run without a cluster manager: set distributed.{", ".join(missing)} '
            '(e.g. --config.distributed.coordinator=host0:29500 '
            '--config.distributed.num_processes=2 --config.distributed.process_id=0) or '
            f'{ENV_COORDINATOR} / {ENV_NUM_PROCESSES} / {ENV_PROCESS_ID}')
    given = settings(config)
    where = coordinator or f'the address {manager} gives'
    who = f'process {index} of {count}' if index is not None else 'this process'
    if index == 0:
        problem = (f'{who}: not every process joined the run at {where} within '
                   f'{given.timeout_s} s (distributed.timeout_s): start the others with the same '
                   'coordinator and num_processes')
    else:
        problem = (f'{who} could not join the run at {where} within {given.timeout_s} s '
                   '(distributed.timeout_s): is process 0 running, is the port open and do all '
                   'processes use the same address and count?')
    # JAX aborts the whole process (a C++ fatal error) when the deadline passes; report it first.
    watchdog = threading.Timer(max(1.0, given.timeout_s - 1.0), exit_with,
                               (_program(), DistributedError(problem)), {'immediate': True})
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(coordinator, count, index,
                                   initialization_timeout=int(given.timeout_s),
                                   heartbeat_timeout_seconds=int(given.heartbeat_timeout_s))
    except Exception as e:  # noqa: BLE001  XlaRuntimeError, RuntimeError, ValueError
        first = first_line(e)
        raise DistributedError(f'{problem} ({first})') from e
    finally:
        watchdog.cancel()
    # Every process compiles its own programs: the CPU's oneDNN convolutions are partitioned by a
    # Python callback whose id is part of the program, so JAX's sharing of process 0's binary would
    # wait forever under a key only process 0 computes (gsvit_jax.kernels.onednn).
    jax.config.update('jax_share_binary_between_hosts', False)
    log.info('process %d of %d joined the run at %s', jax.process_index(), jax.process_count(),
             where)


def _program() -> str:
    """How error lines start: the script's name (`pretrain: error: ...`)."""
    return pathlib.Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else 'gsvit_jax'


def config_digest(config: ConfigDict, *extra: Any) -> str:
    """sha256 of the config (without per-process settings) and `extra` (e.g. the workdir)."""
    shared = config.copy_and_resolve_references()
    if 'distributed' in shared:
        shared.distributed.process_id = -1
    text = shared.to_json_best_effort(sort_keys=True) + repr(extra)
    return hashlib.sha256(text.encode()).hexdigest()


def check_same_config(config: ConfigDict, *extra: Any) -> None:
    """Every process must run the same config (and `extra`); names the ones that differ."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils
    digest = config_digest(config, *extra)
    mine = np.frombuffer(bytes.fromhex(digest[:16]), np.int32)  # 64 bits as 2 x int32
    every = np.asarray(multihost_utils.process_allgather(mine)).reshape(jax.process_count(), -1)
    differ = [p for p in range(len(every)) if not np.array_equal(every[p], every[0])]
    if differ:
        raise DistributedError(
            f'processes {differ} were started with a different config (or workdir) than process '
            f'0 (config hash {digest[:12]} here, process {jax.process_index()}): start every '
            'process with the same --config, overrides and --workdir')


def split_work(sizes: Mapping[str, int], count: int) -> dict[str, int]:
    """name -> process: largest first, each to the least-loaded process (ties: lowest number,
    then name). A function of the whole list only, so every process computes the same split."""
    load, owner = [0] * count, {}
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        process = min(range(count), key=lambda p: (load[p], p))
        owner[name] = process
        load[process] += sizes[name]
    return owner


def check_divisible(batch: int, field: str) -> None:
    """A global batch must split evenly over the processes and over all devices."""
    processes, devices = jax.process_count(), jax.device_count()
    if batch < 1:
        raise DistributedError(f'{field}={batch}: expected a positive number')
    if batch % processes:
        raise DistributedError(f'{field}={batch} is not divisible by the {processes} processes: '
                               f'use a multiple of {processes}')
    if batch % devices:
        raise DistributedError(f'{field}={batch} is not divisible by the {devices} devices '
                               f'({processes} process(es) x {jax.local_device_count()}): use a '
                               f'multiple of {devices}')


_barriers: dict[str, int] = {}


def barrier(name: str, timeout_s: float) -> None:
    """Wait until every process arrives here, for at most `timeout_s`.

    Uses the coordination service, not a device collective: XLA:CPU's gloo collectives give up
    after a fixed 30 s when a peer is late (e.g. still compiling, or building a cache), which
    this waits out. Put one before the first collective that follows uneven work.
    """
    if jax.process_count() == 1:
        return
    from jax._src import distributed as jax_distributed  # the client behind jax.distributed
    _barriers[name] = _barriers.get(name, 0) + 1  # barrier ids must be unique
    try:
        jax_distributed.global_state.client.wait_at_barrier(
            f'gsvit_jax:{name}:{_barriers[name]}', int(timeout_s * 1000))
    except Exception as e:  # noqa: BLE001
        first = first_line(e)
        raise PeerLostError(f'process {jax.process_index()}: not every process reached "{name}" '
                            f'within {timeout_s:.0f} s (one died, hung or runs something else). '
                            f'({first})') from e


def compile_together(compile_step: Callable[[], T], timeout_s: float = BARRIER_TIMEOUT_S) -> T:
    """`compile_step()` (a step's compilation), returned once every process has compiled its step.

    The first collective must not start before the slowest process is ready: compile times differ
    between processes (only process 0 writes JAX's persistent cache, and on CPU the others look
    entries up under other keys: `tests/shared_cache_key.py`) and gloo gives up on a late peer
    after 30 s.
    """
    compiled = compile_step()
    barrier('compiled', timeout_s)
    return compiled


def first_process_then_all(name: str, make: Callable[[], T],
                           timeout_s: float = BARRIER_TIMEOUT_S) -> T:
    """`make()` in process 0 first, then in the others: for idempotent preparation into a shared
    directory (e.g. building a dataset once) that must not run concurrently."""
    if jax.process_index() == 0:
        result = make()
        barrier(name, timeout_s)
        return result
    barrier(name, timeout_s)
    return make()


@contextlib.contextmanager
def stop_if_peers_lost(last_checkpoint: Callable[[], int | None] | None = None,
                       peer_timeout_s: float = 0.0) -> Iterator[None]:
    """In a multi-process run, a failed collective or barrier (another process died) becomes a
    `PeerLostError` naming what to do, instead of a traceback or a hang; with `peer_timeout_s`,
    a peer silent that long (`liveness.watch_peers`) ends this process the same way."""
    try:
        with liveness.watch_peers(peer_timeout_s, last_checkpoint, _program()):
            yield
    except Exception as e:  # noqa: BLE001
        if jax.process_count() == 1 or not _is_peer_failure(e):
            raise
        step = last_checkpoint() if last_checkpoint else None
        resume = (f'; restart all processes to resume from checkpoint step {step}'
                  if step is not None else '; restart all processes')
        first = first_line(e)
        raise PeerLostError(f'process {jax.process_index()} lost contact with another process of '
                            f'the run (it died or hung; see its log){resume}. ({first})') from e


_PEER_FAILURE_WORDS = ('gloo', 'connection', 'unavailable', 'deadline', 'heartbeat', 'barrier',
                       'coordination', 'aborted', 'peer', 'socket', 'closed', 'terminated')


def _is_peer_failure(error: Exception) -> bool:
    text = f'{type(error).__name__} {error}'.lower()
    return 'xlaruntimeerror' in text or 'jaxruntimeerror' in text or any(
        word in text for word in _PEER_FAILURE_WORDS)
