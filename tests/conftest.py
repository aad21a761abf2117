"""Test set-up: 8 fake CPU devices and a cheap compile (must happen before JAX is imported), and
shared fixtures."""
import os

import temp_dirs
from xla_env import xla_flags

os.environ['XLA_FLAGS'] = xla_flags(8)
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Reuse compiled programs across tests and the training subprocesses they start.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', str(temp_dirs.TEST_CACHE / 'jax'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')  # eager ops stay out
# Temporary files of this process and its children go to a folder checked at the end (temp_dirs).
SCRATCH = temp_dirs.use_scratch_tmpdir()
# Derived indexes (gsvit_jax.data.frames.FrameTable.cached) go to a fresh directory, not ~/.cache.
os.environ['GSVIT_JAX_CACHE'] = str(SCRATCH / temp_dirs.FRAME_CACHE)

import pathlib  # noqa: E402

try:  # triton (loaded by torch._dynamo, e.g. via torchvision) segfaults if TensorFlow was loaded
    import torch._dynamo  # noqa: E402,F401  first (tensorflow-cpu 2.21, triton 3.8); load it early
except ImportError:
    pass

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from gsvit_jax.config_args import collect_garbage_rarely  # noqa: E402

collect_garbage_rarely()  # as the training entry points do: tests trace many programs

DATA = pathlib.Path(__file__).parent / 'data'


@pytest.fixture(scope='session', autouse=True)
def no_temporary_files_left_behind():
    """After every other fixture is done: nothing a test made is left in the temporary folder
    (removed at exit)."""
    yield
    left = temp_dirs.leftovers(SCRATCH)
    assert not left, f'tests left these in the temporary folder {SCRATCH}: {", ".join(left)}'


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


@pytest.fixture
def no_encoder(monkeypatch):
    """Loading an encoder fails the test: user errors must be found before that slow step."""
    import gsvit_jax.api

    def load(*args, **kwargs):
        raise AssertionError('the encoder was loaded before the user error was found')
    monkeypatch.setattr(gsvit_jax.api, 'load_encoder', load)
