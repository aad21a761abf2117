"""`python shared_cache_key.py script.py ARGS` or `... -m module ARGS`: run a program as one
process of a multi-process CPU run, reading compiled programs from the persistent compilation cache
under the same key as every other process of the run.

Why: JAX keys cache entries on the device topology's fingerprint, and on CPU that fingerprint
differs from process to process (measured: 2 processes x 2 devices, jax 0.10.2). Only process 0
writes entries, so the other processes never found one and compiled each train step again on every
launch (30-50 s in these tests). Here the topology is hashed as the devices' ids, process indices
and kinds, which every process of a run sees alike and which still tell 1-process and multi-process
device sets apart, so the other processes load process 0's executable. When no process finds it,
`jax_share_binary_between_hosts` has process 0 compile it and hand it to the others, which wait
instead of compiling it too. (With per-process keys that option hung: process 0 found its entry and
shared nothing while process 1 waited for it.) What runs is unchanged, only where the compiled
program comes from.
"""
import os
import runpy
import sys

import jax
import numpy as np
from jax._src import cache_key

_topology_fingerprint = cache_key._hash_accelerator_config


def _hash_devices_alike_in_every_process(hash_obj, accelerators: np.ndarray) -> None:
    devices = list(accelerators.flat)
    if any(device.platform != 'cpu' for device in devices):
        return _topology_fingerprint(hash_obj, accelerators)
    hash_obj.update(repr([(d.id, d.process_index, d.device_kind) for d in devices]).encode())


def main(argv: list[str]) -> None:
    cache_key._hash_accelerator_config = _hash_devices_alike_in_every_process
    jax.config.update('jax_share_binary_between_hosts', True)
    if argv[0] == '-m':  # as `python -m`: the working directory first on the path, not tests/
        sys.argv, sys.path[0] = [argv[1], *argv[2:]], os.getcwd()
        runpy.run_module(argv[1], run_name='__main__', alter_sys=True)
    else:
        sys.argv, sys.path[0] = argv, os.path.dirname(os.path.abspath(argv[0]))
        runpy.run_path(argv[0], run_name='__main__')


if __name__ == '__main__':
    main(sys.argv[1:])
