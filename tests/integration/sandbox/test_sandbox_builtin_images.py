"""The built-in images as generated on this machine."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from kiln.images import builtin_image, busybox_image, host_image
from kiln.sandbox.base import DEFAULT_PATH

pytestmark = pytest.mark.sandbox


def test_busybox_layer_is_content_addressed_and_reused(tmp_path: Path) -> None:
    first = busybox_image(tmp_path)
    again = busybox_image(tmp_path)
    assert again == first
    assert first.digest.startswith("sha256:") and first.digest[7:23] == first.layers[0].name
    assert busybox_image(tmp_path / "other").digest == first.digest  # same content, same digest
    layer = first.layers[0]
    assert (layer / "bin" / "busybox").stat().st_size > 1_000_000
    assert os.readlink(layer / "bin" / "sh") == "/bin/busybox"
    assert (layer / "etc" / "passwd").read_text().startswith("root:x:0:0:")
    for empty in ("dev", "proc", "tmp", "root", "workspace"):
        assert list((layer / empty).iterdir()) == []
    assert dict(first.env) == {"PATH": DEFAULT_PATH}
    assert [p.name for p in (tmp_path / "builtin").iterdir()] == [layer.name]  # no temp dirs left


def test_host_image_layer_and_binds(tmp_path: Path) -> None:
    image = host_image(tmp_path)
    (layer,) = image.layers
    etc = layer / "etc"
    assert (etc / "passwd").exists() and not (etc / "shadow").exists()
    assert not (etc / "gshadow").exists() and not (etc / "ssl" / "private").exists()
    for binding, inside in image.ro_binds:
        assert str(binding) == inside and inside in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64")
    assert (Path("/usr"), "/usr") in image.ro_binds
    for name in ("bin", "sbin", "lib", "lib64"):
        host = Path("/") / name
        if host.is_symlink():  # usrmerge: the same symlink, not a bind
            assert os.readlink(layer / name) == os.readlink(host)
    assert not (layer / "root").exists() or list((layer / "root").iterdir()) == []
    assert image.digest == host_image(tmp_path).digest


def test_host_image_is_cheap_after_the_first_call(tmp_path: Path) -> None:
    host_image(tmp_path)
    started = time.monotonic()
    host_image(tmp_path)
    assert time.monotonic() - started < 0.25


def test_builtin_image_by_name(tmp_path: Path) -> None:
    assert builtin_image("busybox", tmp_path).name == "busybox"
    assert builtin_image("host", tmp_path).name == "host"
