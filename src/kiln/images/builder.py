"""Build an image: walk its base and steps, reuse every layer whose key is known, build the rest.

For each layer, in order:

1. compute its key (:mod:`.keys`) from the parent's *ChainID*, the canonical step, the content it
   reads from the repository and its lock entries;
2. look the key up: in the runner's cache first (one small file), then in the layer store;
3. on a miss, take the key's lock on this machine and *claim* it in the store (a second builder of
   the same key, anywhere, waits for the first), build the layer (:mod:`.steps`), unpack it into
   the runner's cache and *publish* it (upload + create-only commit);
4. chain on: the next key depends on the ChainID *after* this layer. A rebuilt layer with the same
   bytes gives the same ChainID, so everything above it is still cached.

A failing step stops the build with the step, the reason and its output: the claim is abandoned,
nothing of it is committed. A lock entry that the source can no longer honour (a registry digest
that is gone, a mirror that moved on) is resolved again, reported, and the build starts over.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.errors import ImageBuildFailed
from kiln.images.apt import (
    APT_CACHE_MOUNTS,
    APT_ENV,
    install_script,
    missing_versions,
    parse_simulation,
    simulate_script,
)
from kiln.images.bases import StaleLockEntry, plan_base
from kiln.images.capture import LayerBlob
from kiln.images.keys import content_facts, copy_facts, digest_facts, key_of, layer_document
from kiln.images.lockfile import Lock
from kiln.images.oci import LAYER_ZSTD, ImageConfig, chain_id, config_bytes, digest_of
from kiln.images.steps import (
    BuildSite,
    StepFailed,
    build_env,
    copy_layer,
    needs_workdir,
    run_layer,
    workdir_layer,
)
from kiln.images.store import LayerRecord, LayerStore
from kiln.sandbox import RootFS
from kiln.sandbox.base import DEFAULT_PATH, WORKSPACE
from kiln.spec.images import DEFAULT_SHELL, Image, ImageStep, image_chain

__all__ = ["BuiltImage", "ImageBuilder", "NotBuilt"]

_STALE_RETRIES = 2
_POLL_S = 1.0
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_RESOLV_CONF = Path("/etc/resolv.conf")


class NotBuilt(Exception):
    """An offline walk (``kiln images ls``) met a layer no one has built, or an unlocked name."""


@dataclass(frozen=True)
class BuiltImage:
    """An image ready for a job: its root for the sandbox, its digest, and what building it took."""

    name: str
    rootfs: RootFS
    digest: str
    diff_ids: tuple[str, ...]
    config: ImageConfig
    records: tuple[LayerRecord, ...]
    layers_built: int
    layers_reused: int
    build_s: float
    lock_changes: tuple[str, ...] = ()

    def report(self) -> dict[str, Any]:
        """The job summary's ``image`` section."""
        return {
            "name": self.name,
            "digest": self.digest,
            "layers": len(self.diff_ids),
            "layers_built": self.layers_built,
            "layers_reused": self.layers_reused,
            "build_s": round(self.build_s, 3),
            "lock_changes": list(self.lock_changes),
        }


@dataclass
class _State:
    records: list[LayerRecord] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)  # bottom first
    config: ImageConfig = field(default_factory=ImageConfig)
    built: int = 0
    reused: int = 0

    @property
    def chain(self) -> str | None:
        return chain_id([r.diff_id for r in self.records])

    @property
    def lowers(self) -> list[Path]:
        return list(reversed(self.dirs))


def expand(value: str, env: Mapping[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` replaced by their values in ``env`` (empty when unset)."""
    return _VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)


def _summary(step: ImageStep) -> str:
    if step.run is not None:
        first = next((line.strip() for line in step.run.splitlines() if line.strip()), "")
        return f"run: {first[:50]}{'…' if len(first) > 50 else ''}"
    if step.apt is not None:
        return "apt: " + " ".join(step.apt)
    if step.copy_ is not None:
        return f"copy: {step.copy_.src} → {step.copy_.dst}"
    if step.workdir is not None:
        return f"workdir: {step.workdir}"
    return "env: " + " ".join(sorted(step.env or {}))


class ImageBuilder:
    """Builds the images of one workflow on one machine.

    Parameters
    ----------
    site
        The runner's cache, sandbox directory, the repository snapshot and the log.
    store
        Layer records and blobs (the control plane, over HTTP on a runner).
    lock
        The workflow's lock; entries resolved during a build are written into it
        (``lock.changes`` says which).
    """

    def __init__(
        self,
        site: BuildSite,
        store: LayerStore,
        lock: Lock,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        wait_s: float = 3600.0,
        offline: bool = False,
    ) -> None:
        self.site = site
        self.store = store
        self.lock = lock
        self.offline = offline
        self._clock = clock
        self._sleep = sleep or site.cancel.wait  # a cancel ends a wait for another build at once
        self._wait_s = wait_s

    def build(self, images: Mapping[str, Image], name: str) -> BuiltImage:
        """Make image ``name`` ready, building what no one has built yet.

        Raises
        ------
        ImageBuildFailed
            A step failed (the message names it and ends with its output), a ``copy`` source is
            missing, or a base does not exist.
        ImageSourceUnavailable
            A registry or mirror needed for a miss cannot be reached.
        BuildCancelled
            ``site.cancel`` was set: the step running then is killed, any wait ends.
        """
        started = self._clock()
        changes_before = len(self.lock.changes)
        for _ in range(_STALE_RETRIES + 1):
            try:
                state = self._build(images, name)
                break
            except StaleLockEntry as stale:
                self.lock.set_base(stale.text, stale.entry, stale.why)
                self.site.log(f"kiln: kiln.lock: {stale.text}: {stale.why}")
        else:
            raise ImageBuildFailed(f"image {name}: its base kept changing while it was built; try again")
        diff_ids = tuple(r.diff_id for r in state.records)
        config = state.config
        env = {"PATH": DEFAULT_PATH, **config.env_dict()}
        ro_binds = ((_RESOLV_CONF, str(_RESOLV_CONF)),) if _RESOLV_CONF.exists() else ()
        digest = digest_of(config_bytes(config, diff_ids))
        rootfs = RootFS(name=name, digest=digest, layers=tuple(state.lowers), ro_binds=ro_binds, env=env)
        return BuiltImage(
            name=name,
            rootfs=rootfs,
            digest=digest,
            diff_ids=diff_ids,
            config=config,
            records=tuple(state.records),
            layers_built=state.built,
            layers_reused=state.reused,
            build_s=self._clock() - started,
            lock_changes=tuple(self.lock.changes[changes_before:]),
        )

    # -- the walk ----------------------------------------------------------------------------------

    def _build(self, images: Mapping[str, Image], name: str) -> _State:
        state = _State()
        chain = image_chain(images, name)
        root = images[chain[0]].base
        before = len(self.lock.changes)
        try:
            plan = plan_base(
                root, self.lock, self.site.cache, self.site.source, self.site.log, offline=self.offline
            )
        except LookupError as missing:
            raise NotBuilt(str(missing)) from missing
        for change in self.lock.changes[before:]:  # a base missing from the lock, resolved now
            self.site.log(f"kiln: kiln.lock: {change}")
        try:
            for layer in plan.layers:
                self._layer(state, chain[0], layer.label, layer.document, layer.make)
        finally:
            plan.close()
        state.config = plan.config
        for image_name in chain:
            for index, step in enumerate(images[image_name].steps):
                self._step(state, image_name, index, step)
        return state

    def _step(self, state: _State, image: str, index: int, step: ImageStep) -> None:
        label = f"step {index + 1} ({_summary(step)})"
        kind = step.kind
        if kind == "env":
            current = state.config.env_dict()
            values = {k: expand(v, {"PATH": DEFAULT_PATH, **current}) for k, v in (step.env or {}).items()}
            state.config = state.config.with_env(values)
            return
        if kind == "workdir":
            assert step.workdir is not None
            workdir = step.workdir
            lowers = state.lowers
            if needs_workdir(lowers, workdir):
                document = layer_document(parent=state.chain, step={"kind": "workdir", "path": workdir})
                self._layer(
                    state,
                    image,
                    label,
                    document,
                    lambda: workdir_layer(self.site, image=image, lowers=lowers, workdir=workdir),
                )
            state.config = state.config.with_workdir(workdir)
            return
        if kind == "copy":
            assert step.copy_ is not None
            src, dst = step.copy_.src, step.copy_.dst
            facts = copy_facts(self.site.source, src)
            if facts is None:
                raise ImageBuildFailed(f"image {image}: {label}: `{src}` does not exist in the repository")
            document = layer_document(
                parent=state.chain, step={"kind": "copy", "src": src, "dst": dst}, content=digest_facts(facts)
            )
            lowers = state.lowers
            self._layer(
                state,
                image,
                label,
                document,
                lambda: copy_layer(self.site, image=image, label=label, lowers=lowers, src=src, dst=dst),
            )
            return
        if kind == "run":
            self._run(state, image, label, step)
            return
        self._apt(state, image, index, label, step)

    def _run(self, state: _State, image: str, label: str, step: ImageStep) -> None:
        assert step.run is not None
        env = build_env(state.config.env_dict(), step.env or {})
        cwd = state.config.workdir or WORKSPACE
        shell = list(step.argv_shell)
        canonical = {
            "kind": "run",
            "run": step.run,
            "shell": shell,
            "env": env,
            "workdir": cwd,
            "network": step.network,
            "cache_mounts": sorted(step.cache_mounts),
            "inputs": list(step.inputs),
        }
        content = digest_facts(content_facts(self.site.source, list(step.inputs))) if step.inputs else None
        document = layer_document(parent=state.chain, step=canonical, content=content)
        lowers = state.lowers
        run = step.run

        def make() -> LayerBlob:
            blob, _ = run_layer(
                self.site,
                image=image,
                label=label,
                lowers=lowers,
                argv=[*shell, run],
                env=env,
                cwd=cwd,
                network=step.network,
                inputs=step.inputs,
                cache_mounts=step.cache_mounts,
            )
            assert blob is not None
            return blob

        self._layer(state, image, label, document, make)

    def _apt(self, state: _State, image: str, index: int, label: str, step: ImageStep) -> None:
        assert step.apt is not None
        packages = sorted(step.apt)
        env = build_env(state.config.env_dict(), APT_ENV)
        lowers = state.lowers
        entry = self.lock.apt_entry(image, index, packages)
        if entry is None and self.offline:
            raise NotBuilt(f"{label}: no versions in kiln.lock")
        if entry is None:
            recorded = self.lock.apt.get(self.lock.apt_id(image, index))
            why = (
                "resolved (no entry in kiln.lock)"
                if recorded is None
                else "resolved again (kiln.lock has versions for other packages: "
                f"{' '.join(sorted(recorded.get('packages', [])))})"
            )
            entry = self._resolve_apt(image, index, label, packages, env, lowers, why=why)
        for attempt in range(2):
            versions: dict[str, str] = dict(entry["versions"])
            canonical = {
                "kind": "apt",
                "packages": packages,
                "env": env,
                "cache_mounts": list(APT_CACHE_MOUNTS),
            }
            document = layer_document(parent=state.chain, step=canonical, lock={"versions": versions})

            def make(versions: dict[str, str] = versions) -> LayerBlob:
                blob, _ = run_layer(
                    self.site,
                    image=image,
                    label=label,
                    lowers=lowers,
                    argv=[*DEFAULT_SHELL, install_script(versions)],
                    env=env,
                    cwd="/",
                    network=True,
                    cache_mounts=APT_CACHE_MOUNTS,
                )
                assert blob is not None
                return blob

            try:
                self._layer(state, image, label, document, make)
                return
            except StepFailed as failed:
                gone = missing_versions(failed.output)
                if attempt or not gone:
                    raise
                why = f"locked versions are gone from the mirror ({', '.join(gone[:3])}); resolved again"
                entry = self._resolve_apt(image, index, label, packages, env, lowers, why=why)

    def _resolve_apt(
        self,
        image: str,
        index: int,
        label: str,
        packages: list[str],
        env: dict[str, str],
        lowers: list[Path],
        *,
        why: str,
    ) -> dict[str, Any]:
        _, output = run_layer(
            self.site,
            image=image,
            label=f"{label}, resolving versions",
            lowers=lowers,
            argv=[*DEFAULT_SHELL, simulate_script(packages)],
            env=env,
            cwd="/",
            network=True,
            cache_mounts=APT_CACHE_MOUNTS,
            keep=False,
            quiet=True,
        )
        versions = parse_simulation(output)
        entry = {"packages": packages, "versions": versions}
        self.lock.set_apt(image, index, entry, why)
        self.site.log(f"kiln: kiln.lock: {image} {label}: {why}: {len(versions)} packages")
        return entry

    # -- one layer ---------------------------------------------------------------------------------

    def _layer(
        self,
        state: _State,
        image: str,
        label: str,
        document: dict[str, Any],
        make: Callable[[], LayerBlob],
    ) -> None:
        self.site.cancel.check(f"image {image}: {label}")
        key = key_of(document)
        cache, tier = self.site.cache, self.store.trust_tier
        record = cache.record(key, reader_tier=tier) or self.store.lookup(key)
        built = False
        if record is None and self.offline:
            raise NotBuilt(f"{label}: not built")
        if self.offline:
            assert record is not None
            state.dirs.append(cache.layer_dir(record.diff_id))
            state.records.append(record)
            state.reused += 1
            return
        if record is None:
            with cache.key_lock(key, self.site.cancel, f"image {image}: {label}: waiting for its build"):
                record = cache.record(key, reader_tier=tier) or self.store.lookup(key)
                if record is None:
                    record, built = self._claim_and_build(key, document, image, label, make)
        cache.remember(record)
        state.dirs.append(cache.fetch(record, self.store.download))
        state.records.append(record)
        if built:
            state.built += 1
        else:
            state.reused += 1
            self.site.log(f"kiln: image {image}: {label}: cached ({record.diff_id[:19]})")

    def _claim_and_build(
        self, key: str, document: dict[str, Any], image: str, label: str, make: Callable[[], LayerBlob]
    ) -> tuple[LayerRecord, bool]:
        deadline = self._clock() + self._wait_s
        announced = False
        while True:
            claim = self.store.claim(key, document, image=image)
            if claim.record is not None:
                return claim.record, False
            if claim.outcome == "claimed":
                break
            if not announced:
                self.site.log(f"kiln: image {image}: {label}: waiting for {claim.holder or 'another build'}")
                announced = True
            if self._clock() > deadline:
                raise ImageBuildFailed(
                    f"image {image}: {label}: gave up waiting for {claim.holder} to build it"
                )
            self._sleep(_POLL_S)
            self.site.cancel.check(f"image {image}: {label}: waiting for {claim.holder or 'another build'}")
        assert claim.entry_id is not None
        self.site.log(f"kiln: image {image}: {label}: building")
        started = self._clock()
        blob: LayerBlob | None = None
        try:
            blob = make()
            self.site.cache.install(blob.diff_id, blob.path, LAYER_ZSTD)
            record = self.store.publish(
                claim.entry_id, blob, meta={"image": image, "step": label, "document": document}
            )
        except BaseException as exc:
            reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):  # the build's own failure matters more
                self.store.abandon(claim.entry_id, reason[:2000])
            raise
        finally:
            if blob is not None:
                blob.path.unlink(missing_ok=True)
        size_mib = blob.size_bytes / 1024 / 1024
        self.site.log(
            f"kiln: image {image}: {label}: built in {self._clock() - started:.1f}s "
            f"({record.diff_id[:19]}, {size_mib:.1f} MiB)"
        )
        return record, True
