"""Bases that cannot be had: the user's mistake (exit 1) or kiln's side (exit 3), nothing committed.

Real sources throughout: Debian's docker-registry on loopback, a loopback HTTP server standing in
for a Debian mirror that lacks the suite, closed loopback ports for what cannot be reached.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.registry import Registry, registry  # noqa: F401  (a fixture, used by name)
from tests.integration.images.conftest import Builds

from kiln.errors import ImageBuildFailed, ImageSourceUnavailable, KilnError
from kiln.images import service
from kiln.metadata import entries

pytestmark = pytest.mark.sandbox

CLOSED = "127.0.0.1:9"  # the discard port: nothing listens there

WORKFLOW = """
name: demo
images:
  tools:
    from: {base}
    steps:
      - run: echo never > /never.txt
jobs:
  a: {{image: tools, steps: [{{run: x}}]}}
"""


@pytest.fixture
def empty_mirror(tmp_path: Path) -> Iterator[str]:
    """An HTTP server on loopback with no files: a Debian mirror without the suite asked for."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/debian"
    finally:
        server.shutdown()
        server.server_close()


def _fails(builds: Builds, base: str, error: type[KilnError], match: str) -> KilnError:
    with pytest.raises(error, match=match) as caught:
        builds.build(WORKFLOW.format(base=base), "tools")
    with builds.plane.db.read_session() as session:
        layers = entries.search(session, tenant="local", kind=service.KIND, statuses=entries.STATUSES)
    assert layers == []  # the base failed before any claim: nothing partial anywhere
    assert builds.lock.bases == {}  # and nothing is locked
    return caught.value


def test_a_suite_the_mirror_does_not_have_is_the_users_error(
    builds: Builds, empty_mirror: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILN_DEBIAN_MIRROR", empty_mirror)
    error = _fails(builds, "debian:nosuchsuite", ImageBuildFailed, "has no suite `nosuchsuite`")
    assert error.exit_code == 1


def test_an_unreachable_debian_mirror_is_infrastructure(
    builds: Builds, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILN_DEBIAN_MIRROR", f"http://{CLOSED}/debian")
    error = _fails(
        builds, "debian:bookworm", ImageSourceUnavailable, f"cannot reach the Debian mirror http://{CLOSED}"
    )
    assert error.exit_code == 3


def test_an_image_the_registry_does_not_have_is_the_users_error(builds: Builds, registry: Registry) -> None:  # noqa: F811
    base = registry.ref("nothing/here", "1")
    error = _fails(builds, base, ImageBuildFailed, f"the registry at {registry.host} has no such image")
    assert "manifest unknown" in error.message and error.exit_code == 1


def test_a_pinned_digest_the_registry_does_not_have_is_the_users_error(
    builds: Builds,
    registry: Registry,  # noqa: F811
) -> None:
    base = f"docker://{registry.host}/nothing/here@sha256:{'0' * 64}"
    _fails(builds, base, ImageBuildFailed, f"the registry at {registry.host} has no such image")


def test_an_unreachable_registry_is_infrastructure(builds: Builds) -> None:
    error = _fails(
        builds, f"docker://{CLOSED}/nothing/here:1", ImageSourceUnavailable, f"registry at {CLOSED}"
    )
    assert error.exit_code == 3


def test_an_oci_layout_missing_from_the_repository_is_the_users_error(builds: Builds) -> None:
    _fails(builds, "oci:vendor/base:1", ImageBuildFailed, "`vendor/base` is not a folder in the repository")


def test_an_oci_layout_without_the_tag_names_the_tags_it_has(builds: Builds) -> None:
    layout = builds.project / "vendor/base"
    layout.mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(
        '{"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",'
        ' "digest": "sha256:' + "1" * 64 + '", "size": 1,'
        ' "annotations": {"org.opencontainers.image.ref.name": "2"}}]}'
    )
    _fails(builds, "oci:vendor/base:1", ImageBuildFailed, "the layout has no tag `1`; tags: 2")
