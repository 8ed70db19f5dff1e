"""The built-in images: ``host`` (the host's tools, read-only) and ``busybox`` (2 MB, for tests).

Both are generated under ``<state_dir>/builtin/<16 hex>/`` on first use. Folder names are
content-derived and short (the overlay mount option string is limited to one page), and folders
are built beside their final name and renamed into place, so concurrent runners sharing a state
dir never see a half-written layer.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import secrets
import shutil
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import MappingProxyType

from kiln.errors import NotFound, SandboxUnavailable
from kiln.sandbox.base import DEFAULT_PATH, RootFS

__all__ = [
    "BUILTIN_IMAGES",
    "builtin_image",
    "busybox_image",
    "copy_filtered",
    "etc_excluded",
    "host_digest",
    "host_image",
]

_DIGEST_SALT = b"kiln.builtin.v1\0"
_DEFAULT_ENV = MappingProxyType({"PATH": DEFAULT_PATH})

# Empty directories every built-in root has: mount points bwrap would otherwise create in the
# upper on every job, and a fresh HOME (/root) that lives in the job's upper.
_SKELETON_DIRS = ("dev", "proc", "sys", "tmp", "root", "workspace", "home", "var", "var/tmp", "run", "mnt")

# --- host image -------------------------------------------------------------------------------------

# Host directories bound read-only into the host image. On a usrmerge system /bin, /sbin and /lib*
# are symlinks into /usr: those become the same symlinks in the skeleton layer, not binds.
HOST_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

# Parts of /etc that never enter a sandbox, relative to /etc (fnmatch patterns on the relative
# path and on the base name). Anything not world-readable is dropped as well (etc_excluded).
ETC_EXCLUDED_PATHS = (
    "shadow",
    "shadow-",
    "gshadow",
    "gshadow-",
    "sudoers",
    "sudoers.d",
    "ssl/private",
    "ssh/ssh_host_*_key",
    "security/opasswd",
    "apt/auth.conf",
    "apt/auth.conf.d",
    "containers/auth.json",
    "docker/key.json",
    "docker/certs.d",
    "npmrc",  # global npm config; often holds registry auth tokens
    "subuid",
    "subuid-",
    "subgid",
    "subgid-",
    "machine-id",  # identifies the host; jobs have no business with it
)
ETC_EXCLUDED_NAMES = ("*.key", "*.keytab", "*.p12", "*.pfx", ".netrc", "netrc", "*credentials*", "*secret*")


def etc_excluded(relative: str, mode: int) -> bool:
    """Whether ``/etc/<relative>`` (with ``st_mode`` ``mode``) stays out of the host image.

    Dropped: the entries in :data:`ETC_EXCLUDED_PATHS` (password hashes, sudo rules, private
    keys, registry credentials), names that look like keys or credentials, and anything that is
    not world-readable (or, for a directory, not world-searchable), because whoever made it so
    meant it for root or a service account, and a job is neither. Symlinks are kept: they resolve
    inside the sandbox, where only the image is visible.
    """
    name = relative.rsplit("/", 1)[-1]
    if any(fnmatch.fnmatchcase(relative, pattern) for pattern in ETC_EXCLUDED_PATHS):
        return True
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in ETC_EXCLUDED_NAMES):
        return True
    if stat.S_ISLNK(mode):
        return False
    if stat.S_ISDIR(mode):
        return mode & 0o005 != 0o005
    if stat.S_ISREG(mode):
        return not mode & 0o004
    return True  # sockets, fifos, devices: nothing a job needs from /etc


def _walk_filtered(source: Path) -> Iterator[tuple[str, os.stat_result]]:
    """``(relative path, lstat)`` of every entry of ``source`` the filter keeps, parents first, sorted."""

    def walk(directory: Path, prefix: str) -> Iterator[tuple[str, os.stat_result]]:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            return
        for name in names:
            relative = f"{prefix}{name}"
            try:
                st = os.lstat(directory / name)
            except OSError:
                continue
            if etc_excluded(relative, st.st_mode):
                continue
            yield relative, st
            if stat.S_ISDIR(st.st_mode):
                yield from walk(directory / name, relative + "/")

    return walk(source, "")


def copy_filtered(source: Path, destination: Path) -> None:
    """Copy what the filter keeps of ``source`` into the existing directory ``destination``."""
    directories: list[tuple[Path, os.stat_result]] = []
    for relative, st in _walk_filtered(source):
        src, dst = source / relative, destination / relative
        if stat.S_ISDIR(st.st_mode):
            dst.mkdir()
            directories.append((dst, st))
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
        else:
            try:
                shutil.copyfile(src, dst, follow_symlinks=False)
            except OSError:
                continue  # vanished or unreadable: it just is not in the image
            os.chmod(dst, stat.S_IMODE(st.st_mode))
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.lchown(dst, st.st_uid, st.st_gid)
    for dst, st in reversed(directories):  # modes and mtimes last: writing inside changes them
        os.chmod(dst, stat.S_IMODE(st.st_mode))
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def _host_skeleton_fingerprint(etc: Path) -> str:
    h = hashlib.sha256(b"kiln.host-skeleton.v1\0")
    for relative, st in _walk_filtered(etc):
        target = os.readlink(etc / relative) if stat.S_ISLNK(st.st_mode) else ""
        h.update(
            f"{relative}\0{st.st_mode:o}\0{st.st_uid}\0{st.st_gid}\0{st.st_size}\0{st.st_mtime_ns}\0{target}\n".encode()
        )
    for system_dir in HOST_SYSTEM_DIRS:
        h.update(f"{system_dir}\0{_host_dir_kind(Path(system_dir))}\n".encode())
    return h.hexdigest()


def _host_dir_kind(path: Path) -> str:
    """``"link:<target>"``, ``"dir"`` or ``"absent"``: how a host system dir enters the image."""
    if path.is_symlink():
        return f"link:{os.readlink(path)}"
    return "dir" if path.is_dir() else "absent"


def _build_host_skeleton(layer: Path, etc: Path) -> None:
    _make_skeleton_dirs(layer)
    (layer / "etc").mkdir()
    copy_filtered(etc, layer / "etc")
    os.chmod(layer / "etc", 0o755)
    for system_dir in HOST_SYSTEM_DIRS:
        kind = _host_dir_kind(Path(system_dir))
        if kind.startswith("link:"):
            os.symlink(kind.removeprefix("link:"), layer / system_dir.lstrip("/"))


_dpkg_cache: dict[tuple[int, int, int], str] = {}
_cache_lock = threading.Lock()


def _dpkg_status_digest(status: Path) -> str:
    # 700 KB to hash on every job is avoidable: dpkg rewrites the file (new inode/mtime) on change.
    try:
        st = status.stat()
    except FileNotFoundError:
        return "absent"
    key = (st.st_ino, st.st_size, st.st_mtime_ns)
    with _cache_lock:
        cached = _dpkg_cache.get(key)
    if cached is None:
        cached = hashlib.sha256(status.read_bytes()).hexdigest()
        with _cache_lock:
            _dpkg_cache[key] = cached
    return cached


def host_digest(
    dpkg_status: Path = Path("/var/lib/dpkg/status"), usr_local: Path = Path("/usr/local")
) -> str:
    """The host image's digest: installed packages plus a listing of /usr/local.

    The listing uses path, type, size and mtime (not content): cheap, and any install or upgrade
    there changes it, which is what caches keyed on the image need to notice.
    """
    h = hashlib.sha256(_DIGEST_SALT + b"host\0")
    h.update(_dpkg_status_digest(dpkg_status).encode() + b"\n")
    for root, dirs, files in os.walk(usr_local):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            h.update(f"{path}\0{stat.S_IFMT(st.st_mode)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return f"sha256:{h.hexdigest()}"


def host_image(state_dir: Path) -> RootFS:
    """The host's system directories, read-only, with a filtered copy of /etc.

    /usr (and /bin, /sbin, /lib* where they are real directories) is bound read-only. A generated
    skeleton layer holds the filtered /etc (see :func:`etc_excluded`), the usrmerge symlinks and
    empty mount points. Never included: /root, /home, /work, /tmp, /var/lib, project folders.

    Parameters
    ----------
    state_dir
        The runner's state directory; the skeleton layer is generated under it.
    """
    etc = Path("/etc")
    layer = _ensure_layer(
        state_dir, _host_skeleton_fingerprint(etc), lambda directory: _build_host_skeleton(directory, etc)
    )
    binds = tuple((Path(d), d) for d in HOST_SYSTEM_DIRS if _host_dir_kind(Path(d)) == "dir")
    return RootFS(name="host", digest=host_digest(), layers=(layer,), ro_binds=binds, env=_DEFAULT_ENV)


# --- busybox image ----------------------------------------------------------------------------------

BUSYBOX_SOURCES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
_BUSYBOX_ETC = {
    "passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "group": "root:x:0:\nnogroup:x:65534:\n",
    "hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
}
_busybox_cache: dict[tuple[Path, int, int, int], tuple[str, list[str]]] = {}


def _static_busybox() -> Path:
    for candidate in BUSYBOX_SOURCES:
        if candidate.is_file():
            return candidate
    raise SandboxUnavailable("no busybox binary (install the Debian package busybox-static)")


def _busybox_facts(binary: Path) -> tuple[str, list[str]]:
    """sha256 of the binary and its applets as paths (``bin/sh``, ``usr/bin/awk`` …), cached by stat."""
    st = binary.stat()
    key = (binary, st.st_ino, st.st_size, st.st_mtime_ns)
    with _cache_lock:
        cached = _busybox_cache.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()
    listed = subprocess.run(
        [str(binary), "--list-full"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    applets = sorted({line.strip() for line in listed.splitlines() if line.strip() and ".." not in line})
    with _cache_lock:
        _busybox_cache[key] = (digest, applets)
    return digest, applets


def _busybox_digest(binary_digest: str, applets: list[str]) -> str:
    # The digest of the layer's content, computed from what will be written (so it is known before
    # building): the binary, each applet link, the /etc files and the empty dirs.
    h = hashlib.sha256(_DIGEST_SALT + b"busybox\0")
    h.update(f"bin/busybox\0file\0755\0{binary_digest}\n".encode())
    for applet in applets:
        if applet != "bin/busybox":
            h.update(f"{applet}\0link\0/bin/busybox\n".encode())
    for name, content in sorted(_BUSYBOX_ETC.items()):
        h.update(f"etc/{name}\0file\0644\0{hashlib.sha256(content.encode()).hexdigest()}\n".encode())
    for directory in _SKELETON_DIRS:
        h.update(f"{directory}\0dir\n".encode())
    return h.hexdigest()


def _build_busybox(layer: Path, binary: Path, applets: list[str]) -> None:
    _make_skeleton_dirs(layer)
    for directory in ("bin", "sbin", "usr/bin", "usr/sbin", "etc"):
        (layer / directory).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(binary, layer / "bin" / "busybox")
    os.chmod(layer / "bin" / "busybox", 0o755)
    for applet in applets:
        link = layer / applet
        if applet != "bin/busybox" and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink("/bin/busybox", link)
    for name, content in _BUSYBOX_ETC.items():
        (layer / "etc" / name).write_text(content)
        os.chmod(layer / "etc" / name, 0o644)


def busybox_image(state_dir: Path) -> RootFS:
    """A 2 MB root filesystem from Debian's static busybox: fast to start, ideal for tests.

    Parameters
    ----------
    state_dir
        The runner's state directory; the layer is generated under it once.

    Raises
    ------
    SandboxUnavailable
        When no static busybox is installed.
    """
    binary = _static_busybox()
    binary_digest, applets = _busybox_facts(binary)
    digest = _busybox_digest(binary_digest, applets)
    layer = _ensure_layer(state_dir, digest, lambda directory: _build_busybox(directory, binary, applets))
    return RootFS(name="busybox", digest=f"sha256:{digest}", layers=(layer,), env=_DEFAULT_ENV)


# --- shared -----------------------------------------------------------------------------------------

BUILTIN_IMAGES: dict[str, Callable[[Path], RootFS]] = {"busybox": busybox_image, "host": host_image}


def builtin_image(name: str, state_dir: Path) -> RootFS:
    """The built-in image called ``name``.

    Raises
    ------
    NotFound
        When ``name`` is not a built-in image; the message lists those that are.
    """
    factory = BUILTIN_IMAGES.get(name)
    if factory is None:
        raise NotFound(f"no built-in image {name!r} (built-in images: {', '.join(sorted(BUILTIN_IMAGES))})")
    return factory(state_dir)


def _make_skeleton_dirs(layer: Path) -> None:
    for directory in _SKELETON_DIRS:
        (layer / directory).mkdir(parents=True, exist_ok=True)
    os.chmod(layer / "tmp", 0o1777)
    os.chmod(layer / "var" / "tmp", 0o1777)
    os.chmod(layer / "root", 0o700)


def _ensure_layer(state_dir: Path, fingerprint: str, build: Callable[[Path], None]) -> Path:
    """``<state_dir>/builtin/<fingerprint[:16]>``, built by ``build`` if it does not exist yet."""
    parent = state_dir.resolve() / "builtin"  # absolute: layer paths go into mount options
    layer = parent / fingerprint[:16]
    if layer.is_dir():
        return layer
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".new-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        build(tmp)
        os.chmod(tmp, 0o755)
        try:
            tmp.rename(layer)
        except OSError:
            if not layer.is_dir():  # lost a race only if the winner's layer is there
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return layer
