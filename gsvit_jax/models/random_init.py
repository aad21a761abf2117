"""Random initial variables for the Flax models, compiled quickly on every backend."""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.random import define_prng_impl

_GOLDEN = 0x9E3779B9  # 2**32 / golden ratio: a Weyl step that spreads consecutive counters


def _u32(value: int) -> jnp.ndarray:
    return jnp.uint32(value)


def _mix(x: jnp.ndarray) -> jnp.ndarray:
    """MurmurHash3's 32-bit finaliser: every input bit flips about half of the output bits."""
    x = x ^ (x >> 16)
    x = x * _u32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * _u32(0xC2B2AE35)
    return x ^ (x >> 16)


def _stream(key: jnp.ndarray, shape: tuple[int, ...]) -> jnp.ndarray:
    """uint32 `shape`: element i is a hash of (key, i), so one elementwise loop per draw."""
    counter = lax.iota(jnp.uint32, math.prod(shape))
    return _mix(_mix(counter * _u32(_GOLDEN) + key[0]) ^ key[1]).reshape(shape)


def _seed(seed: jnp.ndarray) -> jnp.ndarray:
    low = lax.convert_element_type(seed, jnp.uint32)
    high = lax.convert_element_type(seed >> 32, jnp.uint32) if seed.dtype.itemsize > 4 else _u32(0)
    return jnp.stack([_mix(low ^ _u32(_GOLDEN)), _mix(high + _mix(low + _u32(0x7F4A7C15)))])


def _split(key: jnp.ndarray, shape: tuple[int, ...]) -> jnp.ndarray:
    first = _stream(jnp.stack([key[0] ^ _u32(0xA5A5A5A5), key[1]]), shape)
    second = _stream(jnp.stack([key[0] ^ _u32(0x5A5A5A5A), key[1] + _u32(1)]), shape)
    return jnp.stack([first, second], axis=-1)  # shape + (2,)


def _fold_in(key: jnp.ndarray, data: jnp.ndarray) -> jnp.ndarray:
    data = lax.convert_element_type(data, jnp.uint32)
    return jnp.stack([_mix(key[0] ^ _mix(data + _u32(0x68E31DA4))),
                      _mix(key[1] + data * _u32(0xB5297A4D))])


def _random_bits(key: jnp.ndarray, bit_width: int, shape: tuple[int, ...]) -> jnp.ndarray:
    bits = _stream(key, shape)
    if bit_width == 32:
        return bits
    if bit_width in (8, 16):
        return lax.convert_element_type(bits >> (32 - bit_width), jnp.dtype(f'uint{bit_width}'))
    high = _stream(jnp.stack([key[0], key[1] ^ _u32(0x3C6EF372)]), shape)
    return (lax.convert_element_type(high, jnp.uint64) << 32) | lax.convert_element_type(
        bits, jnp.uint64)


# A key for initialisation only: every random number is a hash of (key, position), and split /
# fold_in are a few integer operations. JAX's threefry (and 'rbg', whose fold_in is threefry)
# lower to one unrolled hash per parameter on CPU: the M0 encoder's init program had 60,000 HLO
# lines and compiled in ~40 s; with this key it has 10,000. Being plain integer arithmetic, the
# values are also the same on every backend and device count.
INIT_KEY = define_prng_impl(key_shape=(2,), seed=_seed, split=_split, random_bits=_random_bits,
                            fold_in=_fold_in, name='gsvit_init_hash', tag='gih')


def jitted_init(model: nn.Module) -> Callable:
    """`jax.jit(model.init)`, one per model configuration (Flax modules compare by their fields)
    in a process: every random init and shape query of an equal model reuses its trace, which
    costs ~2 s for M5 (a new `jax.jit` object would trace the whole forward pass again). A model
    with unhashable fields (e.g. a list) gets a new one each time."""
    try:
        return _shared_jitted_init(model)
    except TypeError:  # unhashable
        return jax.jit(model.init)


@functools.lru_cache(maxsize=32)
def _shared_jitted_init(model: nn.Module) -> Callable:
    return jax.jit(model.init)


def _init_inputs(img_size: int, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    """The (key, image) `jitted_init` is called with: an `INIT_KEY` key and a (1, S, S, 3) zero
    image (the same avals for every seed and for shape queries, so one trace serves all)."""
    return jax.random.key(seed, impl=INIT_KEY), jnp.zeros((1, img_size, img_size, 3))


def random_variables(model: nn.Module, img_size: int, seed: int = 0) -> dict[str, Any]:
    """`model.init` on a (1, img_size, img_size, 3) input, jitted, with an `INIT_KEY` key."""
    return jitted_init(model)(*_init_inputs(img_size, seed))


def variable_shapes(model: nn.Module, img_size: int) -> dict[str, Any]:
    """Shapes/dtypes of `model`'s variables (nothing allocated), from the same trace as
    `random_variables`."""
    key, image = jax.eval_shape(functools.partial(_init_inputs, img_size))
    return jax.eval_shape(jitted_init(model), key, image)
