"""How a library's exception reads inside a one-line user error (`errors.describe`)."""
from gsvit_jax.errors import describe, first_line


def test_describe_names_the_type_once_and_keeps_the_first_line():
    assert describe(KeyError()) == 'KeyError'  # not "KeyError: KeyError"
    assert describe(KeyError('train')) == "KeyError: 'train'"
    assert describe(ValueError('\n  bad header\nstack trace ...')) == 'ValueError: bad header'
    assert first_line(OSError('x' * 400)) == 'x' * 300
