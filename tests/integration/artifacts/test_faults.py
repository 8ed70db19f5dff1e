"""Artifacts commit when a fifth of the part uploads fail (a loopback proxy breaks them for real)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tests.fixtures.seaweedfs import SeaweedFS
from tests.integration.caches.harness import start, stop
from tests.integration.storage.faultproxy import EveryFifthWrite, Fault, FaultProxy, Request

from kiln.runner import ControlPlaneClient

from .harness import ArtifactKiln

pytestmark = pytest.mark.sandbox

WORKFLOW = """
name: faults
jobs:
  build:
    image: busybox
    steps:
      - run: mkdir -p out && head -c 67108864 /dev/urandom > out/data && sha256sum out/data
    artifacts: [{name: out, paths: [out]}]
  test:
    image: busybox
    needs: [build]
    steps: [{run: sha256sum out/data}]
"""


def every_fifth_part() -> Callable[[Request], Fault | None]:
    """Break exactly one part upload in five (nothing else), alternating a cut request and a lost answer."""
    every_fifth = EveryFifthWrite()

    def policy(request: Request) -> Fault | None:
        is_part = "/parts/" in request.target or "partNumber=" in request.target
        return every_fifth(request) if is_part else None

    return policy


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


@pytest.mark.parametrize("backend", ["file", pytest.param("s3", marks=pytest.mark.s3)])
def test_artifacts_commit_when_a_fifth_of_the_parts_fail(
    backend: str, tmp_path: Path, project, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = every_fifth_part()
    if backend == "s3":
        # The proxy sits between everyone and SeaweedFS: the presigned part URLs point at it.
        weed: SeaweedFS = request.getfixturevalue("seaweedfs")
        for name, value in weed.env().items():
            monkeypatch.setenv(name, value)
        proxy = FaultProxy(_port(weed.endpoint), policy).start()
        url = weed.url(f"artifacts-{uuid.uuid4().hex[:12]}").replace(weed.endpoint, proxy.endpoint)
        harness, server = start(tmp_path / "kiln", storage_url=url)
        client = harness.client
    else:
        # The file store's grants are URLs of the control plane itself: the proxy sits before it.
        harness, server = start(tmp_path / "kiln")
        proxy = FaultProxy(_port(server.url), policy).start()
        client = ControlPlaneClient(proxy.endpoint, harness.plane.api_token)
    try:
        kiln = ArtifactKiln(harness, client)
        run_id = kiln.submit(project({"kiln.yml": WORKFLOW}))
        summary = kiln.finish(run_id)
        log = kiln.log(run_id)
        assert [job["status"] for job in summary["jobs"]] == ["success", "success"], log
        (made,) = summary["jobs"][0]["artifacts"]
        assert made["state"] == "committed" and made["parts"] >= 8
        sums = re.findall(r"([0-9a-f]{64})  out/data", log)
        assert len(sums) == 2 and sums[0] == sums[1]  # the test job got the very bytes the build made
        assert summary["jobs"][1]["artifacts"][0]["digest"] == made["digest"]
        assert sum(proxy.faults.values()) >= 2, proxy.faults
    finally:
        proxy.stop()
        if client is not harness.client:
            client.close()
        stop(harness, server)
