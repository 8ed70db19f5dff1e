"""Fixtures for the image tests: a control plane (metadata + file blob store) and a builder on it.

Builds run for real: the sandbox (bubblewrap, overlayfs, cgroups), the layer store over the
metadata database, the runner's layer cache. ``Builds`` keeps a project folder and builds its
workflow's images the way ``kiln images build`` does, but in this process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.fixtures.databases import *  # noqa: F403  (fixtures are found by name)

from kiln.api.plane import ControlPlane, open_control_plane
from kiln.images.builder import BuiltImage, ImageBuilder
from kiln.images.layers import LayerCache
from kiln.images.lockfile import Lock
from kiln.images.service import LayerScope, LayerService, PlaneLayerStore
from kiln.images.steps import BuildSite
from kiln.scheduler.trust import TrustTier
from kiln.spec import parse_workflow


def open_plane(root: Path, database_url: str | None = None) -> ControlPlane:
    (root / "spool").mkdir(parents=True, exist_ok=True)
    return open_control_plane(
        database_url or f"sqlite:///{root / 'kiln.db'}", (root / "blobs").as_uri(), spool_dir=root / "spool"
    )


@dataclass
class Builds:
    """A project folder and the kiln (plane + runner cache) its images are built with."""

    root: Path
    plane: ControlPlane
    project: Path
    state: Path
    lock: Lock = field(default_factory=Lock)
    log: list[str] = field(default_factory=list)
    tier: TrustTier = TrustTier.PROTECTED

    def write(self, files: dict[str, str], *, mode: int | None = None) -> None:
        for name, text in files.items():
            path = self.project / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            if mode is not None:
                os.chmod(path, mode)

    def store(self) -> PlaneLayerStore:
        scope = LayerScope("local", "demo", self.tier)
        return PlaneLayerStore(LayerService(self.plane.db, self.plane.blobs), self.plane.blobs, scope)

    def builder(self, state: Path | None = None) -> ImageBuilder:
        cache = LayerCache((state or self.state) / "images")
        site = BuildSite(
            cache, (state or self.state) / "sandbox", self.project, "local\0demo", self.log.append, 300
        )
        return ImageBuilder(site, self.store(), self.lock)

    def build(self, workflow: str, image: str, *, state: Path | None = None) -> BuiltImage:
        return self.builder(state).build(parse_workflow(workflow).images, image)


@pytest.fixture
def builds(tmp_path: Path) -> Iterator[Builds]:
    plane = open_plane(tmp_path / "kiln")
    project = tmp_path / "project"
    project.mkdir()
    yield Builds(tmp_path, plane, project, tmp_path / "runner")
    plane.db.dispose()
