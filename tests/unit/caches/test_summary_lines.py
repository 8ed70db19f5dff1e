"""The human output of ``kiln run``: one line per cache saying what happened and how long it took."""

from __future__ import annotations

from kiln.cli.cache import summary_lines


def test_each_cache_says_what_happened_and_the_time_it_took() -> None:
    job = {
        "caches": [
            {
                "name": "pip",
                "type": "deps",
                "restore": "fallback",
                "matched_scope": "branch:main",
                "restore_s": 1.234,
                "restored_bytes": 2048,
                "save": "saved",
                "save_s": 0.5,
                "saved_archive_bytes": 1000,
            },
            {
                "name": "cc",
                "type": "compiler",
                "restore": "hit",
                "matched_scope": "pr:f",
                "restore_s": 0.25,
                "restored_bytes": 0,
                "save": "unchanged",
                "save_s": 0.01,
                "compiler_hits": 3,
                "compiler_misses": 1,
            },
            {
                "name": "home",
                "type": "deps",
                "restore": "miss",
                "restore_s": 0.0,
                "restored_bytes": 0,
                "save": "refused-secret",
                "save_s": 0.02,
                "error": "/root/.netrc holds the value of secret TOKEN",
            },
        ]
    }
    assert summary_lines(job) == [
        "cache pip (deps): restore fallback from branch:main (1.23s, 2 KiB), "
        "save saved (0.50s, 1000 B packed)",
        "cache cc (compiler): restore hit from pr:f (0.25s, 0 B), save unchanged (0.01s), "
        "ccache 3 hits / 1 misses",
        "cache home (deps): restore miss (0.00s, 0 B), save refused-secret (0.02s): "
        "/root/.netrc holds the value of secret TOKEN",
    ]


def test_a_job_without_caches_has_no_lines() -> None:
    assert summary_lines({"name": "build"}) == []
