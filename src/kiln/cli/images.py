"""``kiln images build | ls | export | lock``: a workflow's custom images, on this machine.

The commands use the local ``KILN_HOME`` as ``kiln run`` does: its control plane (layer records and
blobs, opened in this process) and its runner's layer cache, so a layer built here is a cache hit
for the next ``kiln run`` and the other way round. The repository is snapshotted as for a run, so
``copy`` sources and ``inputs`` are keyed the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from kiln import config
from kiln.api.models import RunOut
from kiln.images.lockfile import Lock, lock_path

__all__ = ["images_commands", "lock_for_submit", "record_lock_updates", "summary_lines"]

_err = Console(stderr=True, highlight=False, soft_wrap=True)


def summary_lines(job: dict[str, Any]) -> list[str]:
    """The human summary's line about a job's custom image (none for a built-in image)."""
    image = job.get("image") or {}
    if "layers_built" not in image:
        return []
    return [
        f"image {image['name']} {str(image.get('digest', ''))[:19]}: {image['layers']} layers, "
        f"{image['layers_built']} built, {image['layers_reused']} reused ({image['build_s']:.2f}s)"
    ]


def lock_for_submit(workflow: Path) -> dict[str, Any] | None:
    """The JSON of the kiln.lock beside ``workflow``, to send with a run (``None`` if there is none)."""
    path = lock_path(workflow)
    return Lock.load(path).to_json() if path.exists() else None


def record_lock_updates(run: RunOut, workflow: Path, console: Console) -> list[str]:
    """Write the lock entries a run's builds resolved into the kiln.lock beside ``workflow``.

    Says which entries it wrote and why the build resolved each (missing from the lock, or stale:
    the step asks for other packages, the locked digest is gone, the mirror moved on).
    """
    found = Lock()
    reasons: list[str] = []
    for job in run.jobs:
        report = job.attempts[-1].report if job.attempts else {}
        image = report.get("image") if isinstance(report.get("image"), dict) else None
        if image and isinstance(image.get("lock"), dict):
            found.merge(Lock.from_json(image["lock"]))
            reasons += [str(line) for line in image.get("lock_changes") or [] if isinstance(line, str)]
    if not found.bases and not found.apt:
        return []
    path = lock_path(workflow)
    lock = Lock.load(path)
    changed = lock.merge(found)
    if changed:
        lock.save(path)
        for entry_id in changed:
            prefixes = (f"{entry_id}: ", f"{entry_id} (apt): ")
            why = next((r[len(p) :] for r in reasons for p in prefixes if r.startswith(p)), None)
            said = f": {why}" if why else ""
            console.print(f"[dim]kiln: {path.name}: recorded {entry_id}{said}[/dim]", highlight=False)
    return changed


@dataclass
class _Local:
    builder: Any  # kiln.images.builder.ImageBuilder
    workflow: Any  # kiln.spec.Workflow
    lock: Lock
    lock_file: Path
    store: Any  # kiln.images.service.PlaneLayerStore
    cache: Any  # kiln.images.layers.LayerCache

    def build(self, name: str) -> Any:
        """Build image ``name``; record the lock entries it resolved, even when it fails."""
        _known(self, name)
        try:
            return self.builder.build(self.workflow.images, name)
        finally:
            self.save_lock()

    def save_lock(self) -> None:
        if self.lock.changes:
            self.lock.save(self.lock_file)
            for change in self.lock.changes:
                _err.print(f"kiln: {self.lock_file.name}: {change}", markup=False)


@contextmanager
def _local(
    workflow_file: Path, source: Path | None, options: dict[str, Any], *, offline: bool = False
) -> Iterator[_Local]:
    from kiln.api.contexts import run_context
    from kiln.api.plane import open_control_plane
    from kiln.cli.context import context_from_options
    from kiln.images.builder import ImageBuilder
    from kiln.images.layers import LayerCache
    from kiln.images.service import LayerScope, LayerService, PlaneLayerStore
    from kiln.images.steps import BuildSite
    from kiln.runner.workspace import fresh_workspace
    from kiln.sandbox import probe
    from kiln.source import snapshot_source
    from kiln.spec import load_workflow

    workflow = load_workflow(workflow_file)
    source = (source or workflow_file.resolve().parent).resolve()
    ctx = context_from_options(source, options)
    run_ctx = run_context(ctx)
    paths = config.Paths(config.kiln_home()).ensure()
    if not offline:
        probe(paths.runner / "sandbox")
    plane = open_control_plane(
        config.database_url(paths), config.storage_url(paths), spool_dir=paths.home / "spool"
    )
    cache = LayerCache(paths.runner / "images")
    snapshot = snapshot_source(source, paths.home / "spool")
    try:
        context = cache.context(snapshot.info.digest, lambda dest: fresh_workspace(snapshot.archive, dest))
    finally:
        snapshot.archive.unlink(missing_ok=True)
    site = BuildSite(
        cache=cache,
        sandbox_dir=paths.runner / "sandbox",
        source=context,
        mount_scope=f"{ctx.tenant}\0{ctx.repo}",
        log=lambda line: _err.print(line, markup=False, style="dim"),
    )
    store = PlaneLayerStore(
        LayerService(plane.db, plane.blobs), plane.blobs, LayerScope(ctx.tenant, ctx.repo, run_ctx.trust_tier)
    )
    lock_file = lock_path(workflow_file)
    lock = Lock.load(lock_file)
    yield _Local(ImageBuilder(site, store, lock, offline=offline), workflow, lock, lock_file, store, cache)


def _known(local: _Local, name: str) -> None:
    from kiln.errors import UsageError
    from kiln.spec.references import nearest

    if name not in local.workflow.images:
        names = list(local.workflow.images)
        guess = nearest(name, names)
        hint = f"did you mean `{guess}`?" if guess else "images: " + (", ".join(names) or "none")
        raise UsageError(f"the workflow defines no image `{name}`; {hint}")


_WORKFLOW = click.option(
    "-f",
    "--workflow",
    "workflow_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default="kiln.yml",
    show_default=True,
    help="The workflow file that defines the images.",
)
_SOURCE = click.option(
    "--source",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The repository (copy sources, inputs) [default: the workflow file's directory].",
)


def images_commands(exits: Callable[[Callable[..., Any]], Callable[..., Any]]) -> click.Group:
    """The ``kiln images`` group, each command wrapped by ``exits`` (the CLI's error → exit code)."""
    from kiln.cli.context import run_context_options

    @click.group("images")
    def group() -> None:
        """Build, list and export the custom images of a workflow (`images:`)."""

    @group.command("build")
    @click.argument("name")
    @_WORKFLOW
    @_SOURCE
    @click.option("--json", "as_json", is_flag=True, help="Print the build's summary as JSON on stdout.")
    @run_context_options
    @exits
    def build(name: str, workflow_file: Path, source: Path | None, as_json: bool, **options: Any) -> None:
        """Build image NAME (reusing every layer already built) and print its digest."""
        with _local(workflow_file, source, options) as local:
            built = local.build(name)
        if as_json:
            click.echo(json.dumps(built.report(), indent=2))
        else:
            click.echo(
                f"{name} {built.digest} ({len(built.diff_ids)} layers: {built.layers_built} built, "
                f"{built.layers_reused} reused, {built.build_s:.2f}s)"
            )

    @group.command("ls")
    @_WORKFLOW
    @_SOURCE
    @click.option("--json", "as_json", is_flag=True, help="Print the list as JSON on stdout.")
    @run_context_options
    @exits
    def ls(workflow_file: Path, source: Path | None, as_json: bool, **options: Any) -> None:
        """List the workflow's images: built or not, digest, layers and size."""
        from kiln.images.builder import NotBuilt

        rows = []
        with _local(workflow_file, source, options, offline=True) as local:
            for name, image in local.workflow.images.items():
                row: dict[str, Any] = {"name": name, "from": image.from_, "steps": len(image.steps)}
                try:
                    built = local.builder.build(local.workflow.images, name)
                except NotBuilt as missing:
                    row.update(status="not built", reason=str(missing))
                else:
                    size = sum(r.size_bytes for r in built.records)
                    row.update(
                        status="built", digest=built.digest, layers=len(built.records), size_bytes=size
                    )
                rows.append(row)
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        for row in rows:
            if row["status"] == "built":
                detail = (
                    f"{row['digest'][:19]}  {row['layers']} layers  {row['size_bytes'] / 1024 / 1024:.1f} MiB"
                )
            else:
                detail = f"not built ({row['reason']})"
            click.echo(f"{row['name']:<20} from {row['from']:<30} {detail}")

    @group.command("export")
    @click.argument("name")
    @click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
    @click.option("--tag", default=None, help="The tag in the layout [default: the image's name].")
    @click.option(
        "--compression",
        type=click.Choice(["gzip", "zstd", "none"]),
        default="gzip",
        show_default=True,
        help="Layer compression in the layout; umoci 0.4 cannot read zstd.",
    )
    @_WORKFLOW
    @_SOURCE
    @run_context_options
    @exits
    def export(
        name: str,
        directory: Path,
        tag: str | None,
        compression: str,
        workflow_file: Path,
        source: Path | None,
        **options: Any,
    ) -> None:
        """Build image NAME if needed and write it to DIRECTORY as an OCI image layout."""
        from kiln.images.export import export_image

        with _local(workflow_file, source, options) as local:
            built = local.build(name)

            def fetch(record: Any, dest: Path) -> None:
                local.store.download(record.digest, dest)

            result = export_image(
                directory,
                tag=tag or name,
                records=built.records,
                config=built.config,
                fetch=fetch,
                compression=compression,  # type: ignore[arg-type]
            )
        click.echo(f"{directory}:{result.tag} {result.config_digest} ({result.layers} layers, {compression})")

    @group.command("lock")
    @click.option("--update", is_flag=True, help="Resolve every entry again, not only the missing ones.")
    @_WORKFLOW
    @_SOURCE
    @run_context_options
    @exits
    def lock(update: bool, workflow_file: Path, source: Path | None, **options: Any) -> None:
        """Resolve registry tags and Debian suites (and apt versions) into kiln.lock.

        Entries no image uses any more (a base the workflow no longer names) are removed.
        """
        from kiln.images.bases import resolve_base
        from kiln.spec.images import parse_base

        with _local(workflow_file, source, options) as local:
            images = local.workflow.images
            for image in images.values():
                ref = parse_base(image.from_)
                if ref.kind in ("docker", "debian") and (update or local.lock.base(ref.text) is None):
                    local.lock.set_base(ref.text, resolve_base(ref), "resolved")
            apt_images = [n for n, image in images.items() if any(s.apt is not None for s in image.steps)]
            if update:
                for name in apt_images:
                    for index in range(len(images[name].steps)):
                        local.lock.apt.pop(Lock.apt_id(name, index), None)
            # apt versions are resolved in the image they install into: build up to there.
            for name in apt_images:
                local.builder.build(images, name)
            used_bases = {parse_base(image.from_).text for image in images.values()}
            used_apt = {
                Lock.apt_id(name, index)
                for name, image in images.items()
                for index, step in enumerate(image.steps)
                if step.apt is not None
            }
            local.lock.prune(used_bases, used_apt)
            if not local.lock.changes and not local.lock_file.exists():
                local.lock.save(local.lock_file)
            local.save_lock()
        click.echo(f"{local.lock_file}: {len(local.lock.changes)} entries changed")

    return group
