"""Atomic writes: the target holds the old or the new content, never a mix; nothing left behind."""
import pytest

from gsvit_jax.atomic import write_atomic, write_text_atomic


def test_write_replaces_the_file_readable_by_others(tmp_path):
    path = tmp_path / 'report.md'
    path.write_text('old')
    assert write_text_atomic(path, 'new ✓') == path
    assert path.read_text(encoding='utf-8') == 'new ✓'
    assert path.stat().st_mode & 0o777 == 0o644  # not the temporary file's private 0600
    assert [p.name for p in tmp_path.iterdir()] == ['report.md']


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / 'index.npz'
    path.write_bytes(b'old')

    def fail(f):
        f.write(b'half')
        raise RuntimeError('disk full')

    with pytest.raises(RuntimeError, match='disk full'):
        write_atomic(path, fail)
    assert path.read_bytes() == b'old'
    assert [p.name for p in tmp_path.iterdir()] == ['index.npz']
