"""Caches through the real ``kiln`` command: ``kiln run`` cold and warm, ``kiln cache ls/explain/rm``.

On the file blob store under KILN_HOME and on SeaweedFS (``KILN_STORAGE_URL``).
"""

from __future__ import annotations

import json
import uuid

import pytest

pytestmark = pytest.mark.sandbox

WORKFLOW = """
name: cached
jobs:
  build:
    caches:
      - {name: vendor, type: deps, paths: [~/.cache/vendor], key: {files: [deps.txt]}, restore-keys: true}
      - {name: cc, type: compiler, paths: [~/.ccache]}
      - {name: tree, type: build, paths: [build], key: {files: ["src/**", Makefile]}}
    steps:
      - run: |
          mkdir -p ~/.cache/vendor
          for d in $(cat deps.txt); do
            [ -f ~/.cache/vendor/$d ] || echo "fetched $d" > ~/.cache/vendor/$d
          done
      - run: make CC="ccache gcc"
      - run: ./build/app
"""
FILES = {
    "deps.txt": "left-pad\n",
    "Makefile": "build/app: src/app.c\n\tmkdir -p build\n\t$(CC) -O2 -c src/app.c -o build/app.o\n"
    "\t$(CC) -o build/app build/app.o\n",
    "src/app.c": '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n',
}


def _caches(result) -> dict[str, dict]:
    assert result.code == 0, result.stderr
    (job,) = result.summary["jobs"]
    return {c["name"]: c for c in job["caches"]}


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def storage_env(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "file":
        return {}
    weed = request.getfixturevalue("seaweedfs")
    return {**weed.env(), "KILN_STORAGE_URL": weed.url(f"e2e-caches-{uuid.uuid4().hex[:12]}")}


def test_cold_then_warm(kiln, project, storage_env) -> None:
    workflow = project(WORKFLOW, FILES)
    cold = _caches(kiln("run", "--json", str(workflow), env=storage_env))
    assert {n: (c["restore"], c["save"]) for n, c in cold.items()} == {
        "vendor": ("miss", "saved"),
        "cc": ("miss", "saved"),
        "tree": ("miss", "saved"),
    }
    # One compilation; the link is not something ccache caches.
    assert (cold["cc"]["compiler_hits"], cold["cc"]["compiler_misses"]) == (0, 1)
    fields = ("key", "matched_key", "matched_scope", "restored_bytes", "restore_s", "saved_bytes", "save_s")
    assert all(field in cold["tree"] for field in fields)

    warm = _caches(kiln("run", "--json", str(workflow), env=storage_env))
    assert {n: c["restore"] for n, c in warm.items()} == {"vendor": "hit", "cc": "hit", "tree": "hit"}
    assert warm["tree"]["matched_scope"] == "branch:main" and warm["tree"]["restored_bytes"] > 0
    assert {n: c["save"] for n, c in warm.items()} == {
        "vendor": "unchanged",
        "cc": "unchanged",
        "tree": "unchanged",
    }
    listed = json.loads(kiln("cache", "ls", "--json", env=storage_env).stdout)
    assert {e["name"] for e in listed} == {"vendor", "cc", "tree"}
    assert all(e["scope"] == "branch:main" and e["trust_tier"] == "protected" for e in listed)


def test_edit_explain_list_and_remove(kiln, project) -> None:
    workflow = project(WORKFLOW, FILES)
    kiln("run", "--json", str(workflow))
    human = kiln("run", str(workflow))
    assert "cache tree (build): restore hit from branch:main" in human.stdout

    (workflow.parent / "src" / "app.c").write_text(
        '#include <stdio.h>\nint main(void) { puts("bye"); return 0; }\n'
    )
    edited = _caches(kiln("run", "--json", str(workflow)))
    assert edited["tree"]["restore"] == "miss"
    assert (edited["cc"]["compiler_hits"], edited["cc"]["compiler_misses"]) == (0, 1)

    explained = kiln("cache", "explain", "build", "tree")
    assert explained.code == 0, explained.stderr
    assert "≠ file src/app.c" in explained.stdout
    as_json = json.loads(kiln("cache", "explain", "build", "tree", "--json").stdout)
    assert [i["name"] for i in as_json["inputs"] if i["differs"]] == ["file src/app.c"]

    table = kiln("cache", "ls").stdout
    assert table.splitlines()[0].split()[:4] == ["REPO", "NAME", "TYPE", "SCOPE"]
    removed = kiln("cache", "rm", "--name", "tree")
    assert removed.code == 0 and "removed 2 cache entries" in removed.stdout
    after = _caches(kiln("run", "--json", str(workflow)))
    assert after["tree"]["restore"] == "miss"

    (vendor, *_) = json.loads(kiln("cache", "ls", "--json", "--name", "vendor").stdout)
    assert json.loads(kiln("cache", "rm", "--json", vendor["entry_id"]).stdout) == {"removed": 1}
    unknown = kiln("cache", "rm", vendor["entry_id"] + "-nope")
    assert unknown.code == 2 and "no entry" in unknown.stderr
    assert "removed" in kiln("cache", "rm", "--all").stdout
    assert json.loads(kiln("cache", "ls", "--json").stdout) == []
    assert kiln("cache", "ls").stdout.strip() == "no cache entries"


def test_a_fork_pr_cannot_poison_the_default_branch(kiln, project) -> None:
    workflow = project(WORKFLOW, FILES)
    fork = ["--event", "pull_request", "--fork", "--pr", "7", "--ref", "main", "--base", "main"]
    poisoned = _caches(kiln("run", "--json", *fork, str(workflow)))
    assert poisoned["tree"]["save"] == "saved"
    again = _caches(kiln("run", "--json", *fork, str(workflow)))
    assert again["tree"]["restore"] == "hit" and again["tree"]["matched_scope"] == "fork-pr:#7"
    default = _caches(kiln("run", "--json", "--ref", "main", str(workflow)))
    assert {n: c["restore"] for n, c in default.items()} == {"vendor": "miss", "cc": "miss", "tree": "miss"}
    explained = kiln("cache", "explain", "build", "tree")
    assert explained.code == 0, explained.stderr
    assert "is not one this run reads" in explained.stdout or "lower tier" in explained.stdout


def test_explain_of_an_unknown_cache_is_a_usage_error(kiln) -> None:
    result = kiln("cache", "explain", "build", "nothing")
    assert result.code == 2
    assert "has not looked up a cache named 'nothing'" in result.stderr


def test_rm_without_a_selection_is_refused(kiln) -> None:
    result = kiln("cache", "rm")
    assert result.code == 2 and "--all" in result.stderr
