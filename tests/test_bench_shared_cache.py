"""bench/shared_cache.py: the table of opened vs filled teacher outputs, and its memory probe."""

import pytest
import torch

from bench.shared_cache import main, render, resident_mib


def test_resident_memory_grows_with_private_tensors():
    before = resident_mib()
    block = torch.ones(64 * 2**20, dtype=torch.uint8)  # 64 MiB, touched
    grown = resident_mib()["RssAnon"] - before["RssAnon"]
    assert 48 < grown < 96 and block.sum() > 0


def test_the_table_sums_private_memory_per_worker_and_file_pages_once():
    run = {"seconds_ready": 1.0, "seconds_first_read": 2.0, "checksum": 100.0}
    result = {
        "examples": 54000, "views": 2, "mode": "full", "workers": 2, "parent_threads": 2, "parent_fill_seconds": 90.0, "write_seconds": 5.0,
        "cache_bytes": 4 * 2**30, "file_bytes": 4 * 2**30,
        "runs": [run | {"kind": "open", "anon_mib": 10, "file_mib": 4096}] * 2 + [run | {"kind": "fill", "anon_mib": 4096, "file_mib": 0, "checksum": 100.0001}] * 2,
    }
    text = render(result, ["--workers", "2"])
    assert "| open the parent's file (now) | 2 | 1.00 | 2.0 | 10 | 4096 | 4.02 |" in text  # 2 x 10 MiB + 4096 once
    assert "| fill their own (before) | 2 | 1.00 | 2.0 | 4096 | 0 | 8.00 |" in text
    assert "agree to 1e-06 relative" in text and "`python -m bench.shared_cache --workers 2`" in text


@pytest.mark.parametrize("argv", [["--workers", "0"], ["--train-subset", "-5"]])
def test_bad_arguments_are_refused_before_anything_runs(argv, capsys, monkeypatch):
    import bench.shared_cache as sc

    monkeypatch.setattr(sc, "measure", lambda *a: pytest.fail("measured despite bad arguments"))
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--no-write"])
    assert exit_.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
