"""XLA flags for tests and the processes they start: fake CPU devices, and a cheaper compile.

Test programs are tiny, so compiling them costs far more than running them. LLVM's optimisation
level 0 compiles a train step in ~60% of the time (measured: runlocal train step 39 s -> 23 s on
2 cores). XLA:CPU's older elemental emitters instead of the MLIR fusion emitters take another
~35% off (compile CPU time of the runlocal train step 41 s -> 26 s, same loss to the last bit).
Without YNNPACK fusions, compiling the runlocal train step takes another ~20% less (31.7 -> 24.9
s) and loading it from the persistent cache 4.7 -> 3.3 s (XLA rebuilds each YNN fusion's thunk
with a search over the module's instructions). These change how fast code runs and compiles;
every test process uses the same flags, so runs compared bit for bit compute alike.
"""
import os

FAST_COMPILE = ('--xla_backend_optimization_level=0', '--xla_cpu_use_fusion_emitters=false',
                '--xla_cpu_experimental_ynn_fusion_type=')


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for a process with `devices` CPU devices (the caller's other flags kept)."""
    kept = [f for f in os.environ.get('XLA_FLAGS', '').split()
            if not f.startswith(('--xla_force_host_platform_device_count=',
                                 *(flag.split('=')[0] for flag in FAST_COMPILE)))]
    return ' '.join([*kept, *FAST_COMPILE, f'--xla_force_host_platform_device_count={devices}'])
