"""XLA flags for tests and the processes they start: fake CPU devices, and a cheaper compile.

Test programs are tiny, so compiling them costs far more than running them. LLVM's optimisation
level 0 compiles a train step in ~60% of the time (measured: runlocal train step 39 s -> 23 s on
2 cores). XLA:CPU's older elemental emitters instead of the MLIR fusion emitters take another
~35% off (compile CPU time of the runlocal train step 41 s -> 26 s, same loss to the last bit).
One LLVM module instead of several compiled in parallel
(`--xla_cpu_parallel_codegen_split_count=1`) saves another ~10% of compile CPU time (runlocal train
step 8.3-8.8 s -> 7.5-7.6 s, same loss and gradient norm to the last bit; the parallelism gains
nothing with two test workers on two cores).
All three change how fast code runs and compiles, not what it computes. (Turning YNNPACK fusions off
too, `--xla_cpu_experimental_ynn_fusion_type=`, would compile the step 20% faster and load it
from the cache in 3.3 s instead of 4.7, but changes float32 rounding enough that 1-device and
8-device steps differ by up to 5e-5 instead of 1e-5: not taken.)
"""
import os

FAST_COMPILE = ('--xla_backend_optimization_level=0', '--xla_cpu_use_fusion_emitters=false',
                '--xla_cpu_parallel_codegen_split_count=1')


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for a process with `devices` CPU devices (the caller's other flags kept)."""
    kept = [f for f in os.environ.get('XLA_FLAGS', '').split()
            if not f.startswith(('--xla_force_host_platform_device_count=',
                                 *(flag.split('=')[0] for flag in FAST_COMPILE)))]
    return ' '.join([*kept, *FAST_COMPILE, f'--xla_force_host_platform_device_count={devices}'])
