"""oneDNN kernels for XLA:CPU through `jax.ffi`: building and loading them, and the convolutions.

XLA:CPU runs the patch embedding's stride-2 3x3 convolutions several times slower than oneDNN does
on the same cores, and its bfloat16 dots in float32 (benchmarks/RESULTS.md), so on the CPU backend
`conv2d` here, `gsvit_jax.kernels.matmul.dense` and `gsvit_jax.kernels.depthwise.forward` call
oneDNN when they can: the `onednn-cpu-gomp` package (a dependency on x86-64 Linux) provides the
library and headers, and a C++ compiler (`$CXX`, else `g++`) builds `onednn_*.cc` once into
`$GSVIT_JAX_CACHE/kernels` (default `~/.cache/gsvit_jax`). Without them (a one-line warning says
why), with `GSVIT_ONEDNN=0`, or on other backends, XLA's own ops are used. Gradients are oneDNN's
too (the depthwise kernel's are XLA's), and under a device mesh every device runs its own rows of
the batch (`custom_partitioning`), so training and sharded programs see no difference. That
partitioning is a Python callback named in the program, so processes of a multi-process run must
each compile their own programs (`gsvit_jax.distributed.initialize` turns JAX's sharing of process
0's binaries off).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

from gsvit_jax.cache_dir import default_cache_dir
from gsvit_jax.errors import UserError
from gsvit_jax.kernels import switches

log = logging.getLogger(__name__)
HERE = pathlib.Path(__file__).parent
# one library: the oneDNN handlers and Adam's fused update (`adam.py`); all include onednn_common.h
SOURCES = (HERE / 'onednn_conv.cc', HERE / 'onednn_depthwise.cc', HERE / 'onednn_matmul.cc',
           HERE / 'fused_adam.cc')
HEADER = HERE / 'onednn_common.h'
FLAGS = ('-O2', '-fno-math-errno', '-std=c++17', '-shared', '-fPIC', '-fopenmp', '-w')
# name -> (FFI target, symbol in the built library)
HANDLERS = {'forward': ('gsvit_onednn_conv', 'GsvitOnednnConv'),
            'backward_data': ('gsvit_onednn_conv_backward_data', 'GsvitOnednnConvBackwardData'),
            'backward_weights': ('gsvit_onednn_conv_backward_weights',
                                 'GsvitOnednnConvBackwardWeights'),
            'matmul': ('gsvit_onednn_matmul', 'GsvitOnednnMatmul'),
            'matmul_residual': ('gsvit_onednn_matmul_residual', 'GsvitOnednnMatmulResidual'),
            'matmul_backward_data': ('gsvit_onednn_matmul_backward_data',
                                     'GsvitOnednnMatmulBackwardData'),
            'matmul_backward_weights': ('gsvit_onednn_matmul_backward_weights',
                                        'GsvitOnednnMatmulBackwardWeights'),
            'depthwise': ('gsvit_onednn_depthwise', 'GsvitOnednnDepthwise'),
            'depthwise_residual': ('gsvit_onednn_depthwise_residual',
                                   'GsvitOnednnDepthwiseResidual'),
            'adam': ('gsvit_fused_adam', 'GsvitFusedAdam'),
            'adam_outer': ('gsvit_fused_adam_outer', 'GsvitFusedAdamOuter')}
# 'auto': oneDNN on the CPU backend where it builds, else XLA; 'xla' or 'onednn' force one for the
# convolutions and the matmuls alike (benchmarks and tests compare them). Read when a function is
# traced.
CONV_IMPL = os.environ.get(switches.CONV_IMPL_ENV, 'auto')


def _onednn_prefix() -> pathlib.Path | None:
    """The installation holding libdnnl.so and oneapi/dnnl/dnnl.hpp (this environment's first)."""
    for prefix in (sys.prefix, sys.base_prefix, '/usr/local', '/usr'):
        root = pathlib.Path(prefix)
        if ((root / 'include/oneapi/dnnl/dnnl.hpp').is_file()
                and (root / 'lib/libdnnl.so').exists()):
            return root
    return None


def _build(prefix: pathlib.Path) -> pathlib.Path:
    """Compile the handler (once per source, jaxlib and oneDNN installation); the library's path."""
    compiler = shutil.which(os.environ.get('CXX', 'g++'))
    if compiler is None:
        raise OSError('no C++ compiler (set $CXX or install g++)')
    include = jax.ffi.include_dir()
    code = '|'.join(path.read_text() for path in (*SOURCES, HEADER))
    recipe = f'{code}|{FLAGS}|{jax.__version__}|{include}|{prefix}|{compiler}'
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    library = default_cache_dir() / 'kernels' / digest / 'libgsvit_onednn.so'
    if library.is_file():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(suffix='.so', dir=library.parent)
    os.close(fd)
    try:
        subprocess.run([compiler, *FLAGS, f'-I{include}', f'-I{prefix / "include"}',
                        *map(str, SOURCES), f'-L{prefix / "lib"}', '-ldnnl',
                        f'-Wl,-rpath,{prefix / "lib"}', '-o', partial],
                       check=True, capture_output=True, text=True)
        os.replace(partial, library)  # atomic: concurrent builds or a crash leave no half file
    except subprocess.CalledProcessError as e:
        raise OSError(f'{compiler} failed: {(e.stderr or "").strip().splitlines()[-1:]}') from None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return library


@functools.cache
def available() -> bool:
    """True once the oneDNN handler is built, loaded and registered with XLA:CPU (tried once)."""
    if os.environ.get('GSVIT_ONEDNN', '1') == '0':
        return False
    prefix = _onednn_prefix()
    if prefix is None:
        log.warning('oneDNN not found (pip install onednn-cpu-gomp onednn-devel-cpu-gomp): '
                    "XLA's own convolutions are used, several times slower on CPU")
        return False
    try:
        library = ctypes.CDLL(str(_build(prefix)))
        for target, symbol in HANDLERS.values():
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)),
                                        platform='cpu')
    except OSError as e:
        log.warning("oneDNN kernels unavailable (%s): XLA's own convolutions are used", e)
        return False
    return True


def use_onednn(dtype=None) -> bool:
    """Whether `conv2d` traced now calls oneDNN for activations of `dtype` (float32 or bfloat16;
    None: either): `CONV_IMPL`, the backend, `available()`."""
    if dtype is not None and jnp.dtype(dtype) not in (jnp.float32, jnp.bfloat16):
        return False
    switches.check_conv_impl(CONV_IMPL)
    if CONV_IMPL == 'xla':
        return False
    if CONV_IMPL == 'onednn':
        if not available():
            raise UserError('GSVIT_CONV_IMPL is "onednn" but the oneDNN kernels are unavailable '
                            '(see the warning above)')
        return True
    return jax.default_backend() == 'cpu' and available()


def xla_conv2d(x: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray | None, stride: int,
               padding: int, relu: bool = False) -> jnp.ndarray:
    """The same convolution with XLA's own op (the reference and the fallback)."""
    y = jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (stride, stride),
                                     ((padding, padding), (padding, padding)),
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    y = y if bias is None else y + bias.astype(x.dtype)
    return jax.nn.relu(y) if relu else y


def _out_size(size: int, k: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - k) // stride + 1


# Forward calls of fewer multiply-adds than this run on one thread: waking a second thread costs
# more than it saves there (GSViT at batch 1 on a 2-core Xeon, medians: fp32 18.9 ms against 24.4
# with every call on two, bf16 26.7 against 41.4; benchmarks/RESULTS.md).
ONE_THREAD_MACS = 2 ** 26


def threads(macs: int | None = None) -> np.int64:
    """Each call's OpenMP team: XLA runs the calls of this process's devices concurrently, so each
    gets its share of the cores; one thread for a call of fewer than ONE_THREAD_MACS `macs`."""
    if macs is not None and macs < ONE_THREAD_MACS:
        return np.int64(1)
    return np.int64(max(1, len(os.sched_getaffinity(0)) // jax.local_device_count()))


def _attrs(stride: int, padding: int, macs: int | None = None) -> dict:
    return dict(stride=np.int64(stride), pad=np.int64(padding), threads=threads(macs))


def _forward_call(x, kernel, bias, stride: int, padding: int, relu: bool):
    """y (B, OH, OW, F) in x's dtype from x (B, H, W, C), float32 kernel (k, k, C, F) and bias,
    ReLU'd if `relu`."""
    n, h, w, _ = x.shape
    kh, kw, channels, features = kernel.shape
    out = (n, _out_size(h, kh, stride, padding), _out_size(w, kw, stride, padding), features)
    macs = int(np.prod(out)) * kh * kw * channels
    return jax.ffi.ffi_call(HANDLERS['forward'][0], jax.ShapeDtypeStruct(out, x.dtype),
                            vmap_method='sequential')(x, kernel, bias, relu=relu,
                                                      **_attrs(stride, padding, macs))


def _backward_data_call(dy, kernel, x_hwc, stride: int, padding: int):
    """dx (dy's batch, *x_hwc) in dy's dtype from the output gradient dy and the float32 kernel."""
    out = jax.ShapeDtypeStruct((dy.shape[0], *x_hwc), dy.dtype)
    return jax.ffi.ffi_call(HANDLERS['backward_data'][0], out, vmap_method='sequential')(
        dy, kernel, **_attrs(stride, padding))


def _backward_weights_call(x, dy, kernel_shape, stride: int, padding: int):
    """(dkernel, dbias), float32, from the input x and the output gradient dy."""
    out = (jax.ShapeDtypeStruct(kernel_shape, jnp.float32),
           jax.ShapeDtypeStruct(kernel_shape[-1:], jnp.float32))
    return jax.ffi.ffi_call(HANDLERS['backward_weights'][0], out, vmap_method='sequential')(
        x, dy, **_attrs(stride, padding))


# Under a device mesh each call runs on its devices' rows of the batch (the kernel and bias
# replicated); the weight gradients' per-device partial sums are then summed over the batch axes.
def batch_axes(arg_shapes) -> str | tuple | None:
    spec = arg_shapes[0].sharding.spec
    return spec[0] if len(spec) else None


def rows_per_device(call, arrays: int, statics: int, rule: str, row_arrays: tuple = (0,)):
    """`call(*arrays, *statics)` under `custom_partitioning`: each device runs it on its rows of
    the first array's batch (and of the other `row_arrays`, batched alike), the other arrays whole,
    and holds those rows of the result."""
    partitioned = custom_partitioning(call, static_argnums=tuple(range(arrays, arrays + statics)))

    def rows(mesh, arg_shapes):
        return NamedSharding(mesh, PartitionSpec(batch_axes(arg_shapes)))

    def partition(*args):
        statics, (mesh, arg_shapes, _) = args[:-3], args[-3:]
        replicated = NamedSharding(mesh, PartitionSpec())
        return (mesh, lambda *xs: call(*xs, *statics), rows(mesh, arg_shapes),
                tuple(rows(mesh, arg_shapes) if i in row_arrays else replicated
                      for i in range(arrays)))

    partitioned.def_partition(infer_sharding_from_operands=lambda *args: rows(*args[-3:-1]),
                              partition=partition, sharding_rule=rule)
    return partitioned


_forward = rows_per_device(_forward_call, 3, 3, 'n h w c, i j c o, o -> n y x o')
_backward_data = rows_per_device(_backward_data_call, 2, 3, 'n y x o, i j c o -> n h w c')


def summed_over_rows(call, statics: int, rule: str):
    """`call(x, dy, *statics)` (weight gradients) under `custom_partitioning`: each device runs it
    on its rows of the batch of x and dy, and the per-device sums are summed across devices."""
    partitioned = custom_partitioning(call, static_argnums=tuple(range(2, 2 + statics)))

    def replicated(mesh, result_shape):
        return jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), result_shape)

    def partition(*args):
        statics, (mesh, arg_shapes, result_shape) = args[:-3], args[-3:]
        batch = batch_axes(arg_shapes)
        rows = NamedSharding(mesh, PartitionSpec(batch))

        def lower(x, dy):
            grads = call(x, dy, *statics)
            return grads if batch is None else jax.lax.psum(grads, batch)
        return mesh, lower, replicated(mesh, result_shape), (rows, rows)

    partitioned.def_partition(
        infer_sharding_from_operands=lambda *args: replicated(args[-3], args[-1]),
        partition=partition, sharding_rule=rule)
    return partitioned


_backward_weights = summed_over_rows(_backward_weights_call, 3, 'n h w c, n y x o -> i j c o, o')


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _onednn_conv2d(x, kernel, bias, stride, padding, relu):
    return _forward(x, kernel.astype(jnp.float32), bias.astype(jnp.float32), stride, padding,
                    relu)


def _conv_forward(x, kernel, bias, stride, padding, relu):
    y = _onednn_conv2d(x, kernel, bias, stride, padding, relu)
    return y, (x, kernel, y if relu else None)


def _conv_backward(stride, padding, relu, residuals, dy):
    x, kernel, y = residuals
    if relu:
        dy = jnp.where(y > 0, dy, 0)
    dx = _backward_data(dy.astype(x.dtype), kernel.astype(jnp.float32), x.shape[1:], stride,
                        padding)
    dkernel, dbias = _backward_weights(x, dy.astype(x.dtype), kernel.shape, stride, padding)
    return dx, dkernel.astype(kernel.dtype), dbias


_onednn_conv2d.defvjp(_conv_forward, _conv_backward)


# A transposed convolution is the backward-data pass of the convolution it transposes (PyTorch's
# ConvTranspose2d weight (in, out, k, k) is that convolution's OIHW kernel), and its gradients are
# that convolution's forward pass and weight gradient.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _onednn_conv_transpose2d(x, kernel, stride, padding):
    _, h, w, _ = x.shape
    k = kernel.shape[0]
    out_hwc = ((h - 1) * stride - 2 * padding + k, (w - 1) * stride - 2 * padding + k,
               kernel.shape[2])
    return _backward_data(x, kernel.astype(jnp.float32), out_hwc, stride, padding)


def _transpose_forward(x, kernel, stride, padding):
    return _onednn_conv_transpose2d(x, kernel, stride, padding), (x, kernel)


def _transpose_backward(stride, padding, residuals, dy):
    x, kernel = residuals
    dy = dy.astype(x.dtype)
    dx = _forward(dy, kernel.astype(jnp.float32), jnp.zeros(kernel.shape[-1:], jnp.float32),
                  stride, padding, False)
    dkernel, _ = _backward_weights(dy, x, kernel.shape, stride, padding)
    return dx, dkernel.astype(kernel.dtype)


_onednn_conv_transpose2d.defvjp(_transpose_forward, _transpose_backward)


def conv_transpose2d(x: jnp.ndarray, weight: jnp.ndarray, *, stride: int,
                     padding: int) -> jnp.ndarray:
    """PyTorch `conv_transpose2d` (no bias) through oneDNN: NHWC x (B, H, W, in), PyTorch weight
    (in, out, k, k) -> (B, (H - 1) * stride - 2 * padding + k, ..., out) in x's dtype. For callers
    that checked `use_onednn()` (XLA's own formulations differ by backend; see the decoder)."""
    if not available():
        raise RuntimeError('the oneDNN kernels are unavailable: check use_onednn() first')
    kernel = jnp.transpose(weight, (2, 3, 1, 0))  # HWIO of the transposed conv: (k, k, out, in)
    return _onednn_conv_transpose2d(x, kernel, stride, padding)


def conv2d(x: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray | None = None, *,
           stride: int = 1, padding: int = 0, relu: bool = False) -> jnp.ndarray:
    """NHWC x (B, H, W, C) * HWIO kernel (k, k, C, F) + bias (F,), symmetric zero padding, then
    ReLU if `relu`, in x's dtype (float32 or bfloat16; bfloat16 accumulates in float32): oneDNN or
    XLA (`use_onednn`)."""
    if not use_onednn(x.dtype):
        return xla_conv2d(x, kernel, bias, stride, padding, relu)
    if bias is None:
        bias = jnp.zeros((kernel.shape[-1],), jnp.float32)
    return _onednn_conv2d(x, kernel, bias, stride, padding, relu)
