"""A temporary folder of its own for each test process (TMPDIR and `tempfile`), inside the
system's, so that anything a test or a program it starts leaves behind is found: conftest fails
the session when the folder holds more than expected at the end; it is removed at exit.

pytest's `tmp_path` folders go inside the first test process's folder (`PYTEST_DEBUG_TEMPROOT`,
inherited by pytest-xdist's workers), so they go with it. The long-lived compilation caches of JAX
(conftest) and of PyTorch's inductor (made on `import torch._dynamo`) live in the repository's
ignored `.test_cache/`: nothing is left in the system's temporary folder.
"""
from __future__ import annotations

import atexit
import getpass
import multiprocessing
import os
import pathlib
import shutil
import sys
import tempfile

SYSTEM_TMP_ENV = 'GSVIT_JAX_TEST_SYSTEM_TMPDIR'  # what TMPDIR was before a test process changed it
FRAME_CACHE = 'gsvit_jax_cache'  # GSVIT_JAX_CACHE inside the scratch folder: expected there
TEST_CACHE = pathlib.Path(__file__).parents[1] / '.test_cache'  # compilation caches, kept


def system_tmp() -> str:
    """The system's temporary folder, also in a test process's children."""
    return os.environ.setdefault(SYSTEM_TMP_ENV, tempfile.gettempdir())


def use_scratch_tmpdir() -> pathlib.Path:
    """Make this process's scratch folder the temporary folder of it and its children."""
    system = system_tmp()
    os.environ.setdefault('TORCHINDUCTOR_CACHE_DIR', str(TEST_CACHE / 'torchinductor'))
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=f'gsvit_jax_tests_{os.getpid()}_', dir=system))
    os.environ.setdefault('PYTEST_DEBUG_TEMPROOT', str(scratch))
    os.environ['TMPDIR'] = str(scratch)
    tempfile.tempdir = str(scratch)
    # at exit, after the handlers registered later (LIFO) have removed their own folders
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    return scratch


def _removed_at_exit() -> set[str]:
    """Folders their owners remove when the process exits (before `use_scratch_tmpdir`'s
    handler, registered earlier, removes the scratch folder): multiprocessing's and TensorFlow's
    test folder (tf.test.get_temp_dir)."""
    folders = {multiprocessing.current_process()._config.get('tempdir')}
    googletest = sys.modules.get('tensorflow.python.platform.googletest')
    folders.add(getattr(googletest, '_googletest_temp_dir', None))
    return {os.path.basename(os.path.normpath(f)) for f in folders if f}


def leftovers(scratch: pathlib.Path) -> list[str]:
    """What is in `scratch` besides the frame cache and folders removed at exit."""
    expected = {FRAME_CACHE, f'pytest-of-{getpass.getuser()}'} | _removed_at_exit()
    return sorted(p.name for p in scratch.iterdir() if p.name not in expected)
