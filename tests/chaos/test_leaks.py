"""The security check can see a leak: a secret planted in a nested log is found, by kind."""

from __future__ import annotations

from pathlib import Path

from tests.chaos.leaks import leaks_in_files


def test_a_secret_in_any_file_under_the_run_is_found_and_named_by_kind(tmp_path: Path) -> None:
    (tmp_path / "roles").mkdir()
    (tmp_path / "roles" / "sync-1.log").write_text("retrying with key abc123-us6 in 1 s\n")
    (tmp_path / "clean.log").write_text("nothing here\n")
    found = leaks_in_files(tmp_path, {"provider api key": "abc123-us6", "api token": "tok-9"})
    assert [(leak.secret, leak.where) for leak in found] == [
        ("provider api key", "roles/sync-1.log")]
    assert all("abc123" not in leak.where for leak in found)
