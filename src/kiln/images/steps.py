"""Making one layer: a ``run`` (or ``apt``) step in the sandbox, or a ``copy`` on the host.

A ``run`` step runs as a job step would (the same sandbox: overlay of the parent's layers as
read-only lowers, a fresh upper, bubblewrap, cgroups), with three differences:

- it is a *build* step (:data:`kiln.sandbox.launcher.BUILD_CAPABILITIES`): real uids and the
  capabilities package managers need to chown files to system users;
- ``/workspace`` holds only the step's declared ``inputs`` (copied from the repository), so
  everything the step can read is in its key; writes there are not part of the layer;
- ``cache-mounts`` are bound read-write from the runner's persistent directories (one per tenant,
  repository, image and target), locked while the step runs; their contents never reach the layer
  or the key. Network steps also see the host's ``/etc/resolv.conf``, read-only.

The layer is the overlay upper after the step, noise removed, captured deterministically.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kiln.caches.files import UnsafePath, safe_path, walk
from kiln.errors import ImageBuildFailed
from kiln.images.cancel import BuildCancel, BuildCancelled
from kiln.images.capture import LayerBlob, capture_layer, remove_noise
from kiln.images.layers import LayerCache
from kiln.images.oci import SOURCE_DATE_EPOCH
from kiln.sandbox import JobSandbox, Limits, RootFS, StepOutcome
from kiln.sandbox.base import DEFAULT_PATH, SANDBOX_HOME, WORKSPACE

__all__ = [
    "BuildSite",
    "StepFailed",
    "build_env",
    "copy_layer",
    "needs_workdir",
    "run_layer",
    "workdir_layer",
]

_RESOLV_CONF = Path("/etc/resolv.conf")
_OUTPUT_TAIL_BYTES = 6000


class StepFailed(ImageBuildFailed):
    """A build step did not succeed; the message names it and ends with its output."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


@dataclass(frozen=True)
class BuildSite:
    """Where a build runs: the runner's layer cache, sandbox state and the repository."""

    cache: LayerCache
    sandbox_dir: Path  # JobSandbox state_dir
    source: Path  # the repository snapshot (copy sources, inputs, oci layouts)
    mount_scope: str  # tenant and repository: cache mounts are never shared across them
    log: Callable[[str], None]
    timeout_s: float | None = None
    cancel: BuildCancel = field(default_factory=BuildCancel)  # set by the job's cancel


def build_env(image_env: Mapping[str, str], step_env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a build step: the image's, kiln's fixed build variables, the step's."""
    env = {"PATH": DEFAULT_PATH, **image_env}
    env.update(HOME=SANDBOX_HOME, SOURCE_DATE_EPOCH=str(SOURCE_DATE_EPOCH))
    env.update(step_env)
    return env


class _Output:
    """Streams a step's output into the job log line by line and keeps its tail for errors."""

    def __init__(self, log: Callable[[str], None], prefix: str, limit: int = _OUTPUT_TAIL_BYTES) -> None:
        self._log, self._prefix, self._limit = log, prefix, limit
        self._partial = b""
        self.tail = bytearray()

    def __call__(self, data: bytes) -> None:
        self.tail += data
        del self.tail[: max(0, len(self.tail) - self._limit)]
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._log(self._prefix + line.decode("utf-8", "replace"))

    def close(self) -> str:
        if self._partial:
            self._log(self._prefix + self._partial.decode("utf-8", "replace"))
            self._partial = b""
        return self.tail.decode("utf-8", "replace")


def _describe(outcome: StepOutcome) -> str:
    if outcome.killed_by:
        return f"killed: {outcome.killed_by}"
    if outcome.exit_code is not None:
        return f"exit code {outcome.exit_code}"
    return f"killed by signal {outcome.signal}"


@contextlib.contextmanager
def _mounts(site: BuildSite, image: str, targets: Sequence[str]) -> Iterator[list[tuple[Path, str]]]:
    """The host directories of ``targets``, each locked for the step (apt needs it exclusive)."""
    binds: list[tuple[Path, str]] = []
    with contextlib.ExitStack() as stack:
        for target in sorted(targets):
            mount_id = hashlib.sha256(f"{site.mount_scope}\0{image}\0{target}".encode()).hexdigest()[:16]
            directory = site.cache.mount_dir(mount_id)
            handle = stack.enter_context((directory.parent / f"{mount_id}.lock").open("a"))
            site.cancel.flock(handle, f"image {image}: waiting for the cache mount {target}")
            data = directory / "data"
            data.mkdir(exist_ok=True)
            binds.append((data, target))
        yield binds


def _stage_inputs(source: Path, patterns: Sequence[str], workspace: Path) -> None:
    """Copy the repository files ``patterns`` match into the step's private workspace."""
    from kiln.caches.keys import collect_files  # the same matching the key used

    matched, _ = collect_files(source, list(patterns))
    for rel in matched:
        _copy_entry(source / rel, workspace / rel)


def _copy_entry(src: Path, dst: Path) -> None:
    """Copy one file or link with normalised metadata (the key saw only content and exec bit)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    st = src.lstat()
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(st.st_mode):
        shutil.copyfile(src, dst, follow_symlinks=False)
        os.chmod(dst, 0o755 if st.st_mode & 0o111 else 0o644)
    else:
        return
    os.utime(dst, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH), follow_symlinks=False)


def run_layer(
    site: BuildSite,
    *,
    image: str,
    label: str,
    lowers: Sequence[Path],
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
    network: bool,
    inputs: Sequence[str] = (),
    cache_mounts: Sequence[str] = (),
    keep: bool = True,
    quiet: bool = False,
) -> tuple[LayerBlob | None, str]:
    """Run one step over ``lowers`` (top first); capture its upper unless ``keep`` is False.

    ``quiet`` keeps the step's output out of the log and returns all of it (up to 4 MiB), for
    steps whose output kiln reads (an ``apt`` simulation).

    Returns
    -------
    tuple[LayerBlob | None, str]
        The captured layer (``None`` when not kept) and the step's output tail.

    Raises
    ------
    StepFailed
        The step failed; the message names it, says why and ends with its output.
    BuildCancelled
        The build was cancelled (before or while the step ran).
    """
    site.cancel.check(f"image {image}: {label}")
    ro_binds = ((_RESOLV_CONF, str(_RESOLV_CONF)),) if network and _RESOLV_CONF.exists() else ()
    rootfs = RootFS(name=f"{image} (building)", digest="", layers=tuple(lowers), ro_binds=ro_binds)
    output = _Output(
        (lambda _line: None) if quiet else site.log, "  | ", 4 << 20 if quiet else _OUTPUT_TAIL_BYTES
    )
    with site.cache.scratch("build-") as scratch, _mounts(site, image, cache_mounts) as binds:
        workspace = scratch / "workspace"
        workspace.mkdir()
        _stage_inputs(site.source, inputs, workspace)
        with (
            JobSandbox(
                rootfs,
                workspace,
                state_dir=site.sandbox_dir,
                name=f"image-{image}",
                limits=Limits(),
                build=True,
            ) as box,
            site.cancel.watching(box),
        ):
            outcome = box.run(
                list(argv),
                env=dict(env),
                network=network,
                timeout_s=site.timeout_s,
                output=output,
                cwd=cwd,
                binds=binds,
            )
            tail = output.close()
            if outcome.killed_by == "cancelled":
                raise BuildCancelled(f"image {image}: {label}: cancelled")
            if not outcome.ok:
                last = "\n".join(tail.rstrip().splitlines()[-8:])
                shown = f"; its last output:\n{last}" if last else " without output"
                raise StepFailed(f"image {image}: {label} failed ({_describe(outcome)}){shown}", tail)
            if not keep:
                return None, tail
            upper = box.host_path("/")
            remove_noise(upper)
            _drop_mount_points(upper, ro_binds)
            blob = capture_layer(upper, scratch.parent / f"{scratch.name}.layer")
    return blob, tail


def _drop_mount_points(upper: Path, ro_binds: Sequence[tuple[Path, str]]) -> None:
    """Remove the empty files bubblewrap created only to bind host files over (resolv.conf)."""
    for _, inside in ro_binds:
        path = upper / inside.lstrip("/")
        with contextlib.suppress(FileNotFoundError):
            st = path.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_size == 0:
                path.unlink()


def _find_in_lowers(lowers: Sequence[Path], relpath: str) -> os.stat_result | None:
    """What the image (top layer first) has at ``relpath``, without following links."""
    for lower in lowers:
        try:
            st = (lower / relpath).lstat()
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            return None  # a whiteout: deleted in a higher layer
        return st
    return None


def _make_parents(upper: Path, lowers: Sequence[Path], inner: str, *, image: str, what: str) -> Path:
    """Create the parents of ``inner`` in ``upper`` as the image has them (or 0755 root-owned)."""
    parts = [p for p in inner.split("/") if p]
    current = upper
    for depth in range(len(parts) - 1):
        rel = "/".join(parts[: depth + 1])
        current = upper / rel
        st = _find_in_lowers(lowers, rel)
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise ImageBuildFailed(
                f"image {image}: {what}: /{rel} is a symbolic link in the image; "
                "write the path it points to instead"
            )
        if current.exists():
            continue
        current.mkdir()
        _like(current, st)
    return upper / inner.lstrip("/")


def _like(folder: Path, st: os.stat_result | None) -> None:
    """Give a folder the image's metadata for it (as overlayfs' copy-up would), or 0755 root."""
    if st is not None and stat.S_ISDIR(st.st_mode):
        os.chmod(folder, stat.S_IMODE(st.st_mode))
        os.chown(folder, st.st_uid, st.st_gid)
        os.utime(folder, (st.st_mtime, st.st_mtime))
    else:
        os.chmod(folder, 0o755)
        os.utime(folder, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))


def copy_layer(
    site: BuildSite, *, image: str, label: str, lowers: Sequence[Path], src: str, dst: str
) -> LayerBlob:
    """A layer holding repository path ``src`` at ``dst`` (a folder's contents go into ``dst``).

    Files get mode 0644 or 0755 (from their exec bit), folders 0755, owner root, mtime the epoch:
    the layer depends on nothing the key does not see.

    Raises
    ------
    ImageBuildFailed
        ``src`` is not in the repository, or passes through a link.
    """
    try:
        source = safe_path(site.source, src)
    except UnsafePath as exc:
        raise ImageBuildFailed(f"image {image}: {label}: `{src}` {exc.reason}") from exc
    if not source.exists() and not source.is_symlink():
        raise ImageBuildFailed(f"image {image}: {label}: `{src}` does not exist in the repository")
    with site.cache.scratch("copy-") as upper:
        target = dst.lstrip("/")
        existing = _find_in_lowers(lowers, target)
        if source.is_dir() and not source.is_symlink():
            root = _make_parents(upper, lowers, dst, image=image, what=label)
            root.mkdir(exist_ok=True)
            for rel, st in walk(source):
                if stat.S_ISDIR(st.st_mode):
                    (root / rel).mkdir(exist_ok=True)
                else:
                    _copy_entry(source / rel, root / rel)
            _settle_dirs(root)
            _like(root, existing)
        else:
            if existing is not None and stat.S_ISDIR(existing.st_mode):
                target = f"{target}/{Path(src).name}"
            _copy_entry(source, _make_parents(upper, lowers, "/" + target, image=image, what=label))
        return capture_layer(upper, upper.parent / f"{upper.name}.layer")


def _settle_dirs(root: Path) -> None:
    """Give the copied folders below ``root`` mode 0755 and the epoch as mtime (deepest first)."""
    folders = [root / rel for rel, st in walk(root) if stat.S_ISDIR(st.st_mode)]
    for folder in reversed(folders):
        os.chmod(folder, 0o755)
        os.utime(folder, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))


def needs_workdir(lowers: Sequence[Path], workdir: str) -> bool:
    """Whether ``workdir`` must be created (the image lacks it; /workspace is always bound)."""
    return workdir != WORKSPACE and _find_in_lowers(lowers, workdir.lstrip("/")) is None


def workdir_layer(site: BuildSite, *, image: str, lowers: Sequence[Path], workdir: str) -> LayerBlob:
    """A layer creating ``workdir`` and its missing parents, as Docker's WORKDIR does."""
    with site.cache.scratch("workdir-") as upper:
        folder = _make_parents(upper, lowers, workdir, image=image, what=f"workdir {workdir}")
        folder.mkdir()
        os.chmod(folder, 0o755)
        os.utime(folder, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))
        return capture_layer(upper, upper.parent / f"{upper.name}.layer")
