"""Test set-up: 8 fake CPU devices and a cheap compile (must happen before JAX is imported), and
shared fixtures."""
import os
import tempfile

from xla_env import xla_flags

os.environ['XLA_FLAGS'] = xla_flags(8)
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Reuse compiled programs across tests and the training subprocesses they start.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(
    os.environ.get('TMPDIR', '/tmp'), f'gsvit_jax_test_cache_{os.getuid()}'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '2')
# Derived indexes (gsvit_jax.data.frames.FrameTable.cached) go to a fresh directory, not ~/.cache.
os.environ.setdefault('GSVIT_JAX_CACHE', tempfile.mkdtemp(prefix='gsvit_jax_test_cache_'))

import pathlib  # noqa: E402

try:  # triton (loaded by torch._dynamo, e.g. via torchvision) segfaults if TensorFlow was loaded
    import torch._dynamo  # noqa: E402,F401  first (tensorflow-cpu 2.21, triton 3.8); load it early
except ImportError:
    pass

import numpy as np  # noqa: E402
import pytest  # noqa: E402

DATA = pathlib.Path(__file__).parent / 'data'


@pytest.fixture(scope='session')
def photos() -> np.ndarray:
    """Three real RGB photographs shipped with scikit-image, resized to 224x224, uint8."""
    from PIL import Image
    from skimage import data
    images = [data.astronaut(), data.coffee(), data.chelsea()]
    return np.stack([np.asarray(Image.fromarray(im).resize((224, 224), Image.BILINEAR))
                     for im in images])


# Slowest files first (measured on 2 cores). With `--dist loadfile --no-loadscope-reorder` each file
# runs whole on one worker, in this order: the long ones start at once and the short ones fill in.
SLOW_FIRST = ('test_multiprocess_pretrain.py', 'test_pretrain.py', 'test_notebooks.py',
              'test_phase_train.py', 'test_remat.py', 'test_multiprocess_phase.py',
              'test_timm_parity.py', 'test_efficientvit.py', 'test_convert.py')


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
