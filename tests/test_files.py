"""`atomic_write` and `digest`: whole files or none, with the permissions any other file gets."""

import hashlib
import os

import pytest

from nas_kd.files import atomic_write, digest


def test_a_written_file_has_the_umasks_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        path = atomic_write(tmp_path / "a" / "report.json", lambda f: f.write("{}"), binary=False)
    finally:
        os.umask(old)
    assert path.read_text() == "{}" and oct(path.stat().st_mode & 0o777) == oct(0o640)  # not mkstemp's 0600


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "final.json"
    path.write_text("old")

    def fails(f):
        f.write(b"half")
        raise KeyboardInterrupt  # a Ctrl-C mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, fails)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["final.json"]


def test_digest_is_the_sha256_of_the_whole_file(tmp_path):
    data = os.urandom(3 * (1 << 20) + 5)  # over three read chunks
    (tmp_path / "t.pt").write_bytes(data)
    assert digest(tmp_path / "t.pt") == hashlib.sha256(data).hexdigest()
