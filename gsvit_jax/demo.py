"""The encoder demo as a library function (also callable from a notebook)."""
from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gsvit_jax.convert import abstract_variables, from_torch, load_torch_file
from gsvit_jax.data.synthetic import surgical_video
from gsvit_jax.models import flatten_latent, fold_batchnorm, gsvit_encoder
from gsvit_jax.models.random_init import random_variables
from gsvit_jax.preprocess import preprocess


def _time(fn, *args, repeats: int = 5) -> float:
    """Median seconds per call after one warm-up call (compilation excluded)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run_encode_demo(weights: str | None = None, batch: int = 8, seed: int = 0) -> dict[str, Any]:
    """Encode `batch` synthetic 144x256 RGB frames; print and return shapes and timings."""
    model = gsvit_encoder()
    if weights:
        variables = from_torch(load_torch_file(weights), abstract_variables(model),
                               drop_prefixes=('head.', 'decoder.'), source=weights)
        print(f'loaded encoder weights from {weights}')
    else:
        variables = random_variables(model, 224, seed)
        print('random encoder weights (pass --weights to import PyTorch ones)')
    frames = surgical_video(batch, seed=seed)  # (B, 144, 256, 3) uint8 RGB
    x = preprocess(frames, channel_order='rgb')
    print(f'frames {frames.shape} {frames.dtype} RGB -> model input {x.shape} BGR in [0, 1]')

    forward = jax.jit(model.apply)
    start = time.perf_counter()
    features = jax.block_until_ready(forward(variables, x))
    compile_s = time.perf_counter() - start
    latent = flatten_latent(features)
    fused_forward = jax.jit(gsvit_encoder(fused=True).apply)
    folded = fold_batchnorm(variables)
    fused_features = fused_forward(folded, x)
    max_diff = float(jnp.abs(fused_features - features).max())
    print(f'features {features.shape}, latent {latent.shape}; '
          f'folded-BN path max |diff| {max_diff:.2e}')

    result = {'features_shape': tuple(features.shape), 'latent_shape': tuple(latent.shape),
              'compile_s': compile_s, 'fold_max_diff': max_diff,
              'batch1_ms': 1e3 * _time(fused_forward, folded, x[:1]),
              f'batch{batch}_img_per_s': batch / _time(fused_forward, folded, x)}
    print(f'first call (compile + run) {compile_s:.1f} s; folded encoder on '
          f'{jax.devices()[0].platform}: batch-1 latency {result["batch1_ms"]:.1f} ms, '
          f'batch-{batch} throughput {result[f"batch{batch}_img_per_s"]:.1f} img/s')
    return result
