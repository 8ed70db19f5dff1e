"""The secret scan that refuses to cache a job's secrets."""

from __future__ import annotations

from pathlib import Path

from kiln.caches.manifest import CacheRoot, scan_roots
from kiln.caches.secretscan import MIN_SCANNED_LENGTH, SecretScanner

TOKEN = "ghp_0123456789abcdefSECRET"


def test_a_value_is_found_by_name_only() -> None:
    scanner = SecretScanner({"GITHUB_TOKEN": TOKEN, "OTHER": "unrelated-value-xyz"})
    assert scanner.names_in(b"prefix " + TOKEN.encode() + b" suffix") == {"GITHUB_TOKEN"}


def test_a_value_cut_between_two_reads_is_found() -> None:
    scanner = SecretScanner({"T": TOKEN})
    stream = scanner.stream()
    data = b"x" * 1000 + TOKEN.encode() + b"y" * 10
    for start in range(0, len(data), 7):
        stream.feed(data[start : start + 7])
    assert stream.found() == {"T"}


def test_each_line_of_a_multiline_secret_is_searched() -> None:
    key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n-----END KEY-----"
    assert SecretScanner({"KEY": key}).names_in(b"...MIIEvQIBADANBgkqhkiG9w0B...") == {"KEY"}


def test_short_values_are_not_searched_for() -> None:
    scanner = SecretScanner({"PIN": "1" * (MIN_SCANNED_LENGTH - 1)})
    assert not scanner
    assert scanner.names_in(b"1" * 100) == set()


def test_the_scan_covers_contents_names_and_link_targets(tmp_path: Path) -> None:
    cache = tmp_path / "build"
    cache.mkdir()
    (cache / "clean.o").write_bytes(b"\0" * 4096)
    (cache / "config.json").write_text('{"token": "' + TOKEN + '"}')
    (cache / f"named-{TOKEN}").write_text("")
    (cache / "link").symlink_to(f"/x/{TOKEN}")
    scan = scan_roots([CacheRoot("build", "workspace/build", tmp_path, "build")], SecretScanner({"T": TOKEN}))
    assert sorted(path for path, _ in scan.secret_hits) == [
        "workspace/build/config.json",
        "workspace/build/link",
        f"workspace/build/named-{TOKEN}",
    ]
    assert {name for _, name in scan.secret_hits} == {"T"}
