"""Caches through real jobs: the runner phase, the HTTP API, blob transfer by grants, the sandbox.

Each test runs small workflows on a warm in-process kiln (``harness.py``): those that move blobs in
interesting ways on the file blob store and on SeaweedFS, the others on the file store only.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from tests.integration.caches.harness import Harness, context

from kiln.caches import wire

pytestmark = pytest.mark.sandbox


#: What the issue asks of every cache in a job's ``--json`` summary (compiler caches: also the counters).
SUMMARY_FIELDS = {
    "name",
    "type",
    "restore",
    "key",
    "matched_key",
    "matched_scope",
    "restored_bytes",
    "restore_s",
    "save",
    "saved_bytes",
    "save_s",
}
RESTORES = {"hit", "fallback", "miss", "corrupt", "skipped"}
SAVES = {"saved", "unchanged", "skipped", "lost-race", "refused-secret", "error"}


def _caches(summary: dict) -> dict[str, dict]:
    (job,) = summary["jobs"]
    for cache in job["caches"]:
        assert cache.keys() >= SUMMARY_FIELDS, SUMMARY_FIELDS - cache.keys()
        assert cache["restore"] in RESTORES and cache["save"] in SAVES, cache
        if cache["type"] == "compiler":
            assert {"compiler_hits", "compiler_misses"} <= cache.keys()
    return {c["name"]: c for c in job["caches"]}


DEPS = """
name: deps
jobs:
  build:
    caches:
      - name: dl
        type: deps
        paths: [~/.cache/dl]
        key: {files: [lock.txt]}
        restore-keys: true
      - name: out
        type: build
        paths: [out]
        key: {files: [lock.txt]}
    steps:
      - run: |
          mkdir -p ~/.cache/dl out
          for pkg in $(cat lock.txt); do
            if [ -f ~/.cache/dl/$pkg ]; then echo "cached $pkg"
            else echo "download $pkg"; echo $pkg > ~/.cache/dl/$pkg; fi
          done
          cat lock.txt > out/result
"""


def test_deps_fall_back_after_a_lockfile_change_and_build_never_does(harness: Harness, write_project) -> None:
    project = write_project({"kiln.yml": DEPS, "lock.txt": "a\nb\n"})
    cold = _caches(harness.run(project))
    assert (cold["dl"]["restore"], cold["dl"]["save"]) == ("miss", "saved")
    assert (cold["out"]["restore"], cold["out"]["save"]) == ("miss", "saved")

    warm = _caches(harness.run(project))
    assert (warm["dl"]["restore"], warm["dl"]["save"]) == ("hit", "unchanged")
    assert (warm["out"]["restore"], warm["out"]["save"]) == ("hit", "unchanged")
    assert warm["dl"]["matched_key"] == warm["dl"]["key"] == cold["dl"]["key"]

    (project / "lock.txt").write_text("a\nb\nc\n")
    changed = harness.run(project)
    caches = _caches(changed)
    assert caches["dl"]["restore"] == "fallback"
    assert caches["dl"]["matched_key"] == cold["dl"]["key"] != caches["dl"]["key"]
    assert caches["dl"]["save"] == "saved"
    assert caches["out"]["restore"] == "miss"  # a build tree never restores for other inputs
    log = "".join(line.data for line in harness.client.logs(changed["run_id"]).lines)
    assert "cached a" in log and "cached b" in log and "download c" in log

    again = _caches(harness.run(project))
    assert (again["dl"]["restore"], again["out"]["restore"]) == ("hit", "hit")


def test_an_mtime_only_change_keeps_the_key(file_harness: Harness, write_project) -> None:
    project = write_project({"kiln.yml": DEPS, "lock.txt": "a\n"})
    first = _caches(file_harness.run(project))
    os.utime(project / "lock.txt", (1_000_000, 1_000_000))
    second = _caches(file_harness.run(project))
    assert second["dl"]["key"] == first["dl"]["key"]
    assert second["out"]["restore"] == "hit"


EXPLAIN = """
name: explain
env: {FLAVOUR: plain}
jobs:
  build:
    caches:
      - {name: tree, type: build, paths: [out], key: {files: [src/**], env: [FLAVOUR]}}
    steps:
      - run: mkdir -p out && cat src/* > out/all
"""


def test_explain_names_the_input_that_differs(file_harness: Harness, write_project) -> None:
    project = write_project({"kiln.yml": EXPLAIN, "src/a.txt": "a\n"})
    file_harness.run(project)
    (project / "kiln.yml").write_text(EXPLAIN.replace("FLAVOUR: plain", "FLAVOUR: fancy"))
    (project / "src" / "a.txt").write_text("A\n")
    assert _caches(file_harness.run(project))["tree"]["restore"] == "miss"
    answer = file_harness.caches().explain("build", "tree")
    assert answer.restore == "miss"
    differing = {i.name: (i.value, i.nearest) for i in answer.inputs if i.differs}
    assert set(differing) == {"env FLAVOUR", "file src/a.txt"}
    assert differing["env FLAVOUR"] == ('"fancy"', '"plain"')


CCACHE = """
name: ccache
jobs:
  build:
    caches:
      - {name: cc, type: compiler, paths: [~/.ccache]}
    steps:
      - run: echo "CCACHE $CCACHE_DIR $CCACHE_COMPILERCHECK $CCACHE_BASEDIR"
      - run: for f in src/*.c; do ccache gcc -O2 -c $f -o /tmp/$(basename $f).o; done
"""


def test_a_compiler_cache_is_restored_extended_and_the_next_run_restores_the_larger_entry(
    harness: Harness, write_project
) -> None:
    project = write_project({"kiln.yml": CCACHE, "src/a.c": "int a(void) { return 1; }\n"})
    summary = harness.run(project)
    first = _caches(summary)["cc"]
    log = "".join(line.data for line in harness.client.logs(summary["run_id"]).lines)
    assert "CCACHE /root/.ccache content /workspace" in log  # kiln wires ccache to the cache path
    assert (first["compiler_hits"], first["compiler_misses"], first["save"]) == (0, 1, "saved")

    (project / "src" / "b.c").write_text("int b(void) { return 2; }\n")
    second = _caches(harness.run(project))["cc"]
    assert second["restore"] == "hit"
    assert (second["compiler_hits"], second["compiler_misses"], second["save"]) == (1, 1, "saved")

    third = _caches(harness.run(project))["cc"]
    assert third["restore"] == "hit" and third["restored_bytes"] > second["restored_bytes"]
    assert (third["compiler_hits"], third["compiler_misses"]) == (2, 0)
    assert third["save"] == "unchanged"  # only ccache's counters changed: nothing to upload
    entries = harness.caches().list(name="cc").entries
    assert len(entries) == 2 and entries[0].key == entries[1].key  # one key, grown once


SECRET = "s3cr3t-t0ken-value-42"
LEAKY = """
name: leaky
jobs:
  build:
    caches:
      - {name: home, type: deps, paths: [~/.config/tool]}
    steps:
      - run: mkdir -p ~/.config/tool && echo "token=$API_TOKEN" > ~/.config/tool/credentials
"""


def test_a_secret_written_into_a_cached_path_is_refused(file_harness: Harness, write_project) -> None:
    project = write_project({"kiln.yml": LEAKY})
    summary = file_harness.run(project, secrets_={"API_TOKEN": SECRET})
    cache = _caches(summary)["home"]
    assert summary["status"] == "success"
    assert cache["save"] == "refused-secret"
    assert cache["error"] == "/root/.config/tool/credentials holds the value of secret API_TOKEN"
    assert SECRET not in str(summary)
    log = "".join(line.data for line in file_harness.client.logs(summary["run_id"]).lines)
    assert "refused-secret" in log and SECRET not in log
    assert file_harness.caches().list().entries == []


POLICIES = """
name: policies
jobs:
  build:
    caches:
      - {name: on-success, type: deps, paths: [a]}
      - {name: always, type: deps, paths: [b], when: always}
      - {name: pull, type: deps, paths: [c], policy: pull}
      - {name: push, type: deps, paths: [d], policy: push, when: always}
    steps:
      - run: mkdir -p a b c d && date > a/x && date > b/x && date > c/x && date > d/x && test -f ok
"""


def test_when_and_policy_decide_what_is_restored_and_saved(file_harness: Harness, write_project) -> None:
    project = write_project({"kiln.yml": POLICIES})
    failed = file_harness.run(project)
    assert failed["status"] == "failed"
    caches = _caches(failed)
    assert {n: c["save"] for n, c in caches.items()} == {
        "on-success": "skipped",
        "always": "saved",
        "pull": "skipped",
        "push": "saved",
    }
    (project / "ok").write_text("")
    caches = _caches(file_harness.run(project))
    assert {n: c["restore"] for n, c in caches.items()} == {
        "on-success": "miss",
        "always": "hit",
        "pull": "miss",
        "push": "skipped",
    }


BROKEN = """
name: broken
jobs:
  build:
    caches:
      - {name: tree, type: deps, paths: [build], fail-on-error: FAIL}
    steps:
      - run: rm -rf build && ln -s / build
"""


@pytest.mark.parametrize("fail_on_error", [False, True])
def test_a_save_error_warns_unless_fail_on_error(
    file_harness: Harness, write_project, fail_on_error: bool
) -> None:
    project = write_project({"kiln.yml": BROKEN.replace("FAIL", str(fail_on_error).lower())})
    summary = file_harness.run(project)
    cache = _caches(summary)["tree"]
    assert cache["save"] == "error" and "/workspace/build is a symbolic link" in cache["error"]
    assert (summary["status"] == "success") is not fail_on_error
    if fail_on_error:
        assert "cache tree: /workspace/build is a symbolic link" in summary["jobs"][0]["error"]
    assert file_harness.caches().list().entries == []


def test_a_corrupt_entry_is_a_miss_quarantined_and_reported(harness: Harness, write_project) -> None:
    project = write_project({"kiln.yml": DEPS, "lock.txt": "a\n"})
    harness.run(project)
    (entry, *_) = harness.caches().list(name="dl").entries
    _damage(harness, entry)
    summary = harness.run(project)
    assert _caches(summary)["dl"]["restore"] == "corrupt"
    log = "".join(line.data for line in harness.client.logs(summary["run_id"]).lines)
    assert f"corrupt entry {entry.entry_id} not restored" in log and "quarantined" in log
    assert entry.entry_id not in {e.entry_id for e in harness.caches().list().entries}
    assert _caches(harness.run(project))["dl"]["restore"] == "hit"  # the run above saved a good one


def _damage(harness: Harness, entry: wire.CacheEntryOut) -> None:
    """Put other bytes where an entry's blob is stored (as a broken disk or a bad actor would)."""
    assert entry.digest
    store = harness.plane.blobs
    root = getattr(store, "root", None)
    if root is not None:  # the file backend
        blob = next(Path(root).rglob(entry.digest.removeprefix("sha256:")))
        blob.chmod(0o644)
        blob.write_bytes(b"not the archive")
    else:  # S3: overwrite the object (no create-only condition on this raw put)
        store._control.put_object(Bucket=store.bucket, Key=store._key(entry.digest), Body=b"not the archive")


RACE = """
name: race
jobs:
  build:
    caches:
      - {name: tree, type: build, paths: [out], key: {files: [src/**]}}
    steps:
      - run: |
          if [ -f out/who ]; then cat out/who; exit 0; fi
          mkdir -p out && cp src/* out/ && sleep 2 && echo "$KILN_RUN_ID" > out/who
"""


def test_concurrent_saves_of_one_build_key_one_saved_one_lost_race(harness: Harness, write_project) -> None:
    project = write_project({"kiln.yml": RACE, "src/a": "a"})
    results: list[dict] = []

    def run(ref: str) -> None:
        results.append(harness.run(project, context(ref)))

    threads = [threading.Thread(target=run, args=(ref,)) for ref in ("main", "main")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    saves = sorted(_caches(r)["tree"]["save"] for r in results)
    assert saves == ["lost-race", "saved"]
    (entry,) = harness.caches().list(name="tree").entries
    winner = next(r for r in results if _caches(r)["tree"]["save"] == "saved")
    assert entry.producer_run_id == winner["run_id"]
    check = harness.run(project)
    assert _caches(check)["tree"]["restore"] == "hit"
    log = "".join(line.data for line in harness.client.logs(check["run_id"]).lines)
    assert winner["run_id"] in log  # the winner's whole tree: its own `who`


SECRET_KEY = """
name: secret-key
jobs:
  build:
    caches:
      - {name: c, type: deps, paths: [x], key: {env: [API_TOKEN]}, fail-on-error: FAIL}
    steps:
      - run: mkdir -p x && echo data > x/f
"""


@pytest.mark.parametrize("fail_on_error", [False, True])
def test_a_secret_named_in_the_key_disables_the_cache(
    file_harness: Harness, write_project, fail_on_error: bool
) -> None:
    project = write_project({"kiln.yml": SECRET_KEY.replace("FAIL", str(fail_on_error).lower())})
    summary = file_harness.run(project, secrets_={"API_TOKEN": SECRET})
    cache = _caches(summary)["c"]
    assert (cache["restore"], cache["save"], cache["key"]) == ("skipped", "skipped", None)
    assert "a secret is never part of a key" in cache["error"]
    assert (summary["status"] == "success") is not fail_on_error
    assert SECRET not in str(summary)


IMAGES = """
name: images
jobs:
  on-host:
    image: host
    caches:
      - {name: c, type: deps, paths: [~/.cache/c], key: {values: [v1]}, restore-keys: true}
    steps:
      - run: mkdir -p ~/.cache/c && echo host > ~/.cache/c/f
  on-busybox:
    image: busybox
    caches:
      - {name: c, type: deps, paths: [~/.cache/c], key: {values: [v1]}, restore-keys: true}
    steps:
      - run: test ! -e ~/.cache/c/f && mkdir -p ~/.cache/c && echo busybox > ~/.cache/c/f
"""


def test_another_image_is_another_key_with_no_fallback_and_explain_names_it(
    file_harness: Harness, write_project
) -> None:
    """The same cache, inputs and paths in two images: neither ever restores the other's toolchain."""
    summary = file_harness.run(write_project({"kiln.yml": IMAGES}))
    assert summary["status"] == "success", summary
    host, busybox = ({c["name"]: c for c in job["caches"]}["c"] for job in summary["jobs"])
    assert host["key"] != busybox["key"]
    assert (busybox["restore"], busybox["save"]) == ("miss", "saved")  # restore-keys: true, still a miss
    answer = file_harness.caches().explain("on-busybox", "c")
    assert [i.name for i in answer.inputs if i.differs] == ["kiln.image"]
    assert answer.nearest is not None and answer.nearest.producer_job == "on-host"


SECRET_VALUE_KEY = """
name: secret-value-key
env: {COPY: "s3cr3t-t0ken-value-42"}
jobs:
  build:
    caches:
      - {name: c, type: deps, paths: [x], key: {env: [COPY]}}
    steps:
      - run: mkdir -p x && echo data > x/f
"""


def test_a_secret_value_under_another_name_never_enters_a_key(file_harness: Harness, write_project) -> None:
    summary = file_harness.run(write_project({"kiln.yml": SECRET_VALUE_KEY}), secrets_={"API_TOKEN": SECRET})
    cache = _caches(summary)["c"]
    assert (cache["restore"], cache["save"], cache["key"]) == ("skipped", "skipped", None)
    assert cache["error"] == "key.env COPY holds the value of a secret; a secret is never part of a key"
    assert summary["status"] == "success"
    assert file_harness.caches().list().entries == []
