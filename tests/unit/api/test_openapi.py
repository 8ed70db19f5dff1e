"""The HTTP API describes itself: the OpenAPI document is served and covers runners and users."""

from __future__ import annotations

from pathlib import Path

import httpx

from kiln.api.app import create_app
from kiln.api.plane import open_control_plane
from kiln.api.server import BackgroundServer


def test_the_openapi_document_is_served_and_lists_the_runner_and_user_endpoints(tmp_path: Path) -> None:
    plane = open_control_plane(
        f"sqlite:///{tmp_path / 'kiln.db'}", f"file://{tmp_path / 'blobs'}", spool_dir=tmp_path / "spool"
    )
    with BackgroundServer(create_app(plane)) as server:
        response = httpx.get(f"{server.url}/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("/v1/runs", "/v1/lease", "/v1/attempts/{attempt_id}/heartbeat", "/v1/runs/{run_id}/logs"):
        assert path in paths, sorted(paths)
