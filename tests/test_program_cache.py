"""Compiled steps kept on disk (`gsvit_jax.train.program_cache`): a second start loads the program
without tracing and computes the same, any change of settings compiles anew, a damaged file is
replaced, and a program JAX loaded from its own cache is never written."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gsvit_jax.train import program_cache


def step(state, x):  # (state, batch) -> (new state, metric), as the train step
    new = {'w': state['w'] * 0.5 + jnp.tanh(x).mean(0), 'n': state['n'] + 1}
    return new, jnp.sum(new['w'] ** 2)


def jitted():
    """A new jit object each time, as in a new process: nothing of a previous trace reused."""
    return jax.jit(step, donate_argnums=0)


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    return ({'w': jnp.asarray(rng.normal(size=16), jnp.float32), 'n': jnp.int32(0)},
            jnp.asarray(rng.normal(size=(4, 16)), jnp.float32))


@pytest.fixture(autouse=True)
def not_in_jax_persistent_cache():
    """JAX's own cache never keeps these programs (however slowly they compile), so each
    compile here is fresh whatever ran before."""
    before = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1e9)
    yield
    jax.config.update('jax_persistent_cache_min_compile_time_secs', before)


@pytest.fixture
def traces(monkeypatch):
    """Counts the traces of Python functions into jaxprs from here on."""
    count = []
    listener = lambda event, duration, **_: count.append(event) if event.endswith(  # noqa: E731
        'jaxpr_trace_duration') else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    yield count
    jax.monitoring.unregister_event_duration_listener(listener)


def test_second_start_loads_the_program_without_tracing_and_computes_the_same(tmp_path, traces):
    first = program_cache.compiled('step', jitted(), inputs(), {'lr': 1e-3}, directory=tmp_path)
    assert len(list(tmp_path.glob('step-*.pkl'))) == 1 and traces
    traces.clear()
    second = program_cache.compiled('step', jitted(), inputs(), {'lr': 1e-3}, directory=tmp_path)
    assert traces == []  # loaded, not traced
    state, x = inputs(1)
    expected = first(*inputs(1))
    new, metric = second(state, x)
    assert state['w'].is_deleted()  # the state is still donated
    np.testing.assert_array_equal(new['w'], expected[0]['w'])
    assert int(new['n']) == 1 and float(metric) == float(expected[1])


def test_other_settings_or_shapes_compile_anew(tmp_path):
    program_cache.compiled('step', jitted(), inputs(), {'lr': 1e-3}, directory=tmp_path)
    program_cache.compiled('step', jitted(), inputs(), {'lr': 2e-3}, directory=tmp_path)
    state, _ = inputs()
    program_cache.compiled('step', jitted(), (state, jnp.zeros((8, 16))), {'lr': 1e-3},
                           directory=tmp_path)
    assert len(list(tmp_path.glob('step-*.pkl'))) == 3


def test_a_damaged_file_is_reported_and_replaced(tmp_path, caplog):
    program_cache.compiled('step', jitted(), inputs(), {}, directory=tmp_path)
    [path] = tmp_path.glob('step-*.pkl')
    path.write_bytes(b'not a program')
    with caplog.at_level(logging.WARNING, logger=program_cache.__name__):
        program = program_cache.compiled('step', jitted(), inputs(), {}, directory=tmp_path)
    assert 'could not load' in caplog.text and str(path) in caplog.text
    assert float(program(*inputs())[1]) == float(jitted()(*inputs())[1])
    program_cache.compiled('step', jitted(), inputs(), {}, directory=tmp_path)  # loads again


def test_nothing_is_kept_without_a_directory_or_after_a_persistent_cache_hit(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr(program_cache, 'default_directory', lambda: None)
    program_cache.compiled('step', jitted(), inputs(), {})
    # A program JAX serves from its persistent cache is not re-serialised (XLA:CPU would write
    # an incomplete copy): the hit is simulated as JAX reports it.
    real_compile = jax.stages.Lowered.compile

    def compile_from_persistent_cache(self, *args, **kwargs):
        program_cache._count_persistent_cache_hits('/jax/compilation_cache/cache_hits')
        return real_compile(self, *args, **kwargs)
    monkeypatch.setattr(jax.stages.Lowered, 'compile', compile_from_persistent_cache)
    program_cache.compiled('step', jitted(), inputs(), {}, directory=tmp_path)
    assert list(tmp_path.iterdir()) == []
