"""Native CPU kernels that XLA:CPU lacks, called through `jax.ffi` (see `onednn`)."""
