"""The iron rule: a build that restores caches gives byte-identical outputs to a clean build.

A small C project goes through random sequences of edits (a source file, a header, the compiler
flags, the toolchain, the dependency list). After each edit one run builds it twice: job
``cached`` with a ``deps``, a ``compiler`` (ccache) and a ``build`` cache, and job ``clean`` with
none, in a fresh sandbox. Every output file must hash the same. The caches persist across edits and
examples, so hits, fallbacks and misses of all three types are mixed in every order hypothesis
finds.

The only image with a compiler is ``host``, so the toolchain varies by its entry point (``gcc`` or
``c99-gcc``, which ccache tells apart by content) rather than by image; the image digest's part
in the key is covered by the key tests.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.integration.caches.harness import Harness, start, stop

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

WORKFLOW = """
name: iron-rule
env:
  CC: {cc}
x-build: &build
  - name: install deps
    run: |
      mkdir -p ~/.cache/vendor build/deps
      for dep in $(cat deps.txt); do
        [ -f ~/.cache/vendor/$dep ] || cp vendor/$dep ~/.cache/vendor/$dep
        cp ~/.cache/vendor/$dep build/deps/$dep
      done
  - name: compile
    run: make CC="$LAUNCHER $CC"
  - name: outputs
    run: find build -type f | sort | xargs sha256sum | sed 's/^/OUT /'
jobs:
  cached:
    env: {{LAUNCHER: ccache}}
    caches:
      - {{name: vendor, type: deps, paths: [~/.cache/vendor], key: {{files: [deps.txt]}}, restore-keys: true}}
      - {{name: cc, type: compiler, paths: [~/.ccache], restore-keys: true}}
      - name: tree
        type: build
        paths: [build]
        key: {{files: ["src/**", "include/**", Makefile, flags.mk, deps.txt, "vendor/**"], env: [CC]}}
    steps: *build
  clean:
    env: {{LAUNCHER: ""}}
    steps: *build
"""

MAKEFILE = """include flags.mk
build/app: build/main.o build/util.o
\t$(CC) $(CFLAGS) -o $@ $^
build/%.o: src/%.c include/config.h flags.mk
\t@mkdir -p build
\t$(CC) $(CFLAGS) -Iinclude -c $< -o $@
"""

BASE = {
    "Makefile": MAKEFILE,
    "flags.mk": "CFLAGS = -O2\n",
    "include/config.h": "#define SCALE 3\n",
    "src/util.c": '#include "config.h"\nint util(int x) { return x * SCALE + 1; }\n',
    "src/main.c": (
        '#include <stdio.h>\nint util(int);\nint main(void) { printf("%d\\n", util(7)); return 0; }\n'
    ),
    "vendor/alpha": "alpha 1.0\n",
    "vendor/beta": "beta 2.1\n",
    "vendor/gamma": "gamma 0.3\n" * 100,
    "deps.txt": "alpha\nbeta\n",
}

EDITS = st.one_of(
    st.tuples(st.just("source"), st.integers(0, 5)),
    st.tuples(st.just("header"), st.integers(1, 4)),
    st.tuples(st.just("flags"), st.sampled_from(["-O0", "-O2", "-O2 -g", "-Os -DNDEBUG"])),
    st.tuples(st.just("toolchain"), st.sampled_from(["gcc", "c99-gcc"])),
    st.tuples(st.just("deps"), st.sampled_from(["alpha\nbeta\n", "alpha\ngamma\n", "beta\n"])),
)


def _apply(project: Path, edit: tuple[str, object], state: dict[str, str]) -> None:
    kind, value = edit
    if kind == "source":
        state["src/util.c"] = f'#include "config.h"\nint util(int x) {{ return x * SCALE + {value}; }}\n'
    elif kind == "header":
        state["include/config.h"] = f"#define SCALE {value}\n"
    elif kind == "flags":
        state["flags.mk"] = f"CFLAGS = {value}\n"
    elif kind == "toolchain":
        state["cc"] = str(value)
    else:
        state["deps.txt"] = str(value)
    _write(project, state)


def _write(project: Path, state: dict[str, str]) -> None:
    for name, text in state.items():
        if name != "cc":
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            (project / name).write_text(text)
    (project / "kiln.yml").write_text(WORKFLOW.format(cc=state["cc"]))


def _outputs(harness: Harness, run_id: str, job: str) -> dict[str, str]:
    lines = "".join(line.data for line in harness.client.logs(run_id).lines if line.job == job)
    return {path: digest for digest, path in re.findall(r"^OUT ([0-9a-f]{64})  (\S+)$", lines, re.MULTILINE)}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Harness, Path]]:
    tmp = tmp_path_factory.mktemp("iron-rule")
    harness, server = start(tmp / "kiln")
    try:
        yield harness, tmp / "project"
    finally:
        stop(harness, server)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(EDITS, min_size=1, max_size=3))
def test_a_cached_build_is_byte_identical_to_a_clean_build(shared, edits) -> None:
    harness, project = shared
    shutil.rmtree(project, ignore_errors=True)
    state = {**BASE, "cc": "gcc"}
    _write(project, state)
    for edit in [("source", 1), *edits]:
        _apply(project, edit, state)
        summary = harness.run(project)
        assert summary["status"] == "success", summary
        cached, clean = (
            _outputs(harness, summary["run_id"], "cached"),
            _outputs(harness, summary["run_id"], "clean"),
        )
        assert "build/app" in clean and cached == clean, (edit, summary["jobs"][0]["caches"])
