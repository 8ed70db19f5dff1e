"""End-to-end helpers: the real ``kiln`` command in a subprocess, on a private KILN_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.fixtures.databases import *  # noqa: F403  (fixtures are found by name)

KILN = [sys.executable, "-m", "kiln"]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict:
        return json.loads(self.stdout)


@pytest.fixture
def kiln_home(tmp_path: Path) -> Path:
    home = tmp_path / "kiln-home"
    home.mkdir()
    return home


@pytest.fixture
def kiln(kiln_home: Path):
    def invoke(*args: str, cwd: Path | None = None, timeout: float = 120, env: dict | None = None) -> Result:
        proc = subprocess.run(
            [*KILN, *args],
            cwd=cwd,
            env={**os.environ, "KILN_HOME": str(kiln_home), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return invoke


@pytest.fixture
def project(tmp_path: Path):
    """A repository folder with a workflow written by the test."""

    def write(workflow: str, files: dict[str, str] | None = None) -> Path:
        root = tmp_path / "project"
        root.mkdir(exist_ok=True)
        (root / "kiln.yml").write_text(workflow)
        for name, text in (files or {}).items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        return root / "kiln.yml"

    return write
