"""How a library's exception reads inside a one-line user error (`errors.describe`), and an
environment switch checked before an entry point's work starts."""
import pytest

from gsvit_jax.errors import describe, first_line, run_reporting_errors


def test_describe_names_the_type_once_and_keeps_the_first_line():
    assert describe(KeyError()) == 'KeyError'  # not "KeyError: KeyError"
    assert describe(KeyError('train')) == "KeyError: 'train'"
    assert describe(ValueError('\n  bad header\nstack trace ...')) == 'ValueError: bad header'
    assert first_line(OSError('x' * 400)) == 'x' * 300


def test_bad_kernel_switch_stops_an_entry_point_before_its_work(monkeypatch, capsys):
    monkeypatch.setenv('GSVIT_CONV_IMPL', 'fast')
    started = []
    with pytest.raises(SystemExit) as exit_info:
        run_reporting_errors('gsvit-test', lambda: started.append(1))
    assert exit_info.value.code == 2 and not started
    err = capsys.readouterr().err
    assert err.startswith('gsvit-test: error: GSVIT_CONV_IMPL') and "'fast'" in err
    assert len(err.strip().splitlines()) == 1
