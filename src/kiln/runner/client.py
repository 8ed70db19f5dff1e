"""The runner's (and the CLI's) HTTP client for the control plane.

Transport failures and 5xx answers are retried with capped exponential backoff until
``retry_deadline_s`` passes, then raise :class:`ControlPlaneUnavailable`. Error answers are
translated back into the kiln error class the server raised (its name travels in the body), so
``LeaseLost`` on the server is ``LeaseLost`` here and the runner stops the job.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from kiln import errors
from kiln.api.access_models import (
    PrincipalOut,
    RegisteredOut,
    RegisterIn,
    RepositoryIn,
    RepositoryOut,
    TenantIn,
    TenantOut,
    TokenCreatedOut,
    TokenCreateIn,
    TokenOut,
)
from kiln.api.blob_models import (
    DownloadGrantIn,
    DownloadGrantOut,
    PartGrantsIn,
    PartGrantsOut,
    UploadCompleteIn,
    UploadCompleteOut,
    UploadStartIn,
    UploadStartOut,
)
from kiln.api.models import (
    CompleteIn,
    HeartbeatOut,
    ImageReportIn,
    LeaseIn,
    LeaseOut,
    LogChunkIn,
    LogsIn,
    LogsOut,
    ReleaseIn,
    ReportIn,
    ReportSection,
    RunOut,
    RunSummaryOut,
    StepFinishIn,
    StepStartIn,
    SubmitIn,
)
from kiln.artifacts.wire import (
    ArtifactFailIn,
    ArtifactFinalizeIn,
    ArtifactOut,
    ArtifactReserveIn,
    NeededArtifactOut,
)
from kiln.errors import ControlPlaneUnavailable, KilnError, SpecProblem, WorkflowInvalid

__all__ = ["ControlPlaneClient"]

_RETRYABLE_STATUS = {502, 503, 504}
log = logging.getLogger(__name__)


class _FileBody:
    """A request body that streams a file and starts over from its beginning on each retry."""

    def __init__(self, path: Path, chunk: int = 1024 * 1024) -> None:
        self._path, self._chunk = path, chunk

    def __iter__(self) -> Iterator[bytes]:
        with self._path.open("rb") as body:
            while data := body.read(self._chunk):
                yield data


def _translate(response: httpx.Response) -> KilnError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    name, message = body.get("error", ""), body.get("message") or response.text[:500]
    if name == "WorkflowInvalid":
        return WorkflowInvalid([SpecProblem(loc=tuple(p.pop("loc")), **p) for p in body.get("problems", [])])
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, KilnError):
        return cls(message)
    if response.status_code == 401:
        return errors.Unauthorized()
    if response.status_code == 404:
        return errors.NotFound(message)
    if response.status_code == 422:
        return errors.UsageError(f"request rejected by the server: {message}")
    return KilnError(f"control plane answered HTTP {response.status_code}: {message}")


class ControlPlaneClient:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        retry_deadline_s: float = 60.0,
        timeout_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)
        self._retry_deadline_s = retry_deadline_s
        self._sleep = sleep
        self._clock = clock

    def close(self) -> None:
        self._http.close()

    # -- plumbing ----------------------------------------------------------------------------------

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        deadline = self._clock() + self._retry_deadline_s
        delay = 0.1
        while True:
            try:
                response = self._http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                failure: str = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code not in _RETRYABLE_STATUS:
                    if response.is_error:
                        raise _translate(response)
                    return response
                failure = f"HTTP {response.status_code} ({_translate(response).message})"
            if self._clock() + delay > deadline:
                raise ControlPlaneUnavailable(f"control plane at {self.base_url} unreachable: {failure}")
            if delay >= 0.4:  # past the first quick retries: an outage, say so
                log.warning("%s %s failed (%s); retrying", method, url, failure, extra={"action": "retry"})
            self._sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)

    @staticmethod
    def _lease(token: str) -> dict[str, str]:
        return {"X-Kiln-Lease": token}

    # -- users and the CLI -------------------------------------------------------------------------

    def _exists(self, url: str) -> bool:
        """HEAD ``url``: 200 means present, 404 absent; anything else is an error as usual."""
        try:
            self._request("HEAD", url)
        except errors.NotFound:
            return False
        return True

    def upload_source(self, digest: str, archive: Path) -> None:
        if self._exists(f"/v1/sources/{digest}"):
            return
        self._request("PUT", f"/v1/sources/{digest}", content=_FileBody(archive))

    def submit(self, body: SubmitIn) -> RunOut:
        return RunOut.model_validate(self._request("POST", "/v1/runs", json=body.model_dump()).json())

    def get_run(self, run_id: str) -> RunOut:
        return RunOut.model_validate(self._request("GET", f"/v1/runs/{run_id}").json())

    def cancel_run(self, run_id: str) -> RunOut:
        return RunOut.model_validate(self._request("POST", f"/v1/runs/{run_id}/cancel").json())

    def logs(self, run_id: str, after: int = 0) -> LogsOut:
        return LogsOut.model_validate(
            self._request("GET", f"/v1/runs/{run_id}/logs", params={"after": after}).json()
        )

    # -- runners -----------------------------------------------------------------------------------

    def lease(self, runner_id: str, run_id: str | None = None) -> LeaseOut | None:
        response = self._request(
            "POST", "/v1/lease", json=LeaseIn(runner_id=runner_id, run_id=run_id).model_dump()
        )
        return None if response.status_code == 204 else LeaseOut.model_validate(response.json())

    @contextmanager
    def download_source(self, digest: str, lease_token: str | None = None) -> Iterator[httpx.Response]:
        """Stream a source snapshot; a runner passes its job token (the job's run's source only)."""
        headers = self._lease(lease_token) if lease_token else {}
        with self._stream(f"/v1/sources/{digest}", headers=headers) as response:
            yield response

    @contextmanager
    def _stream(self, url: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """GET ``url`` as a stream; an error answer raises its kiln error before any byte is read."""
        with self._http.stream("GET", url, **kwargs) as response:
            if response.is_error:
                response.read()
                raise _translate(response)
            yield response

    def heartbeat(self, attempt_id: str, token: str) -> HeartbeatOut:
        response = self._request("POST", f"/v1/attempts/{attempt_id}/heartbeat", headers=self._lease(token))
        return HeartbeatOut.model_validate(response.json())

    def append_logs(self, attempt_id: str, token: str, chunks: list[LogChunkIn]) -> None:
        body = LogsIn(chunks=chunks).model_dump()
        self._request("POST", f"/v1/attempts/{attempt_id}/logs", json=body, headers=self._lease(token))

    def step_started(self, attempt_id: str, token: str, index: int, name: str) -> None:
        body = StepStartIn(name=name).model_dump()
        self._request(
            "POST", f"/v1/attempts/{attempt_id}/steps/{index}/start", json=body, headers=self._lease(token)
        )

    def step_finished(self, attempt_id: str, token: str, index: int, body: StepFinishIn) -> None:
        self._request(
            "POST",
            f"/v1/attempts/{attempt_id}/steps/{index}/finish",
            json=body.model_dump(),
            headers=self._lease(token),
        )

    def report_image(self, attempt_id: str, token: str, name: str, digest: str) -> None:
        body = ImageReportIn(name=name, digest=digest).model_dump()
        self._request("POST", f"/v1/attempts/{attempt_id}/image", json=body, headers=self._lease(token))

    def report(self, attempt_id: str, token: str, section: ReportSection, value: Any) -> None:
        """Publish one section of the job's summary (``caches``, ``artifacts``, ``image``)."""
        body = ReportIn(value=value).model_dump()
        self._request(
            "PUT", f"/v1/attempts/{attempt_id}/report/{section}", json=body, headers=self._lease(token)
        )

    def complete(self, attempt_id: str, token: str, body: CompleteIn) -> None:
        self._request(
            "POST", f"/v1/attempts/{attempt_id}/complete", json=body.model_dump(), headers=self._lease(token)
        )

    # -- caches ------------------------------------------------------------------------------------

    def cache_call(
        self,
        method: str,
        path: str,
        *,
        lease_token: str | None = None,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """One call of the cache API under ``/v1`` (see :mod:`kiln.caches.remote`); the JSON answer.

        Runners pass their lease token; users call without one. ``None`` for an empty answer.
        """
        headers = self._lease(lease_token) if lease_token else {}
        response = self._request(method, f"/v1{path}", json=json, params=params, headers=headers)
        return response.json() if response.content else None

    # -- artifacts ---------------------------------------------------------------------------------

    def reserve_artifact(self, attempt_id: str, token: str, body: ArtifactReserveIn) -> ArtifactOut:
        """Claim the upload of one of the job's artifacts (``upload_needed`` says whether to send it)."""
        url = f"/v1/attempts/{attempt_id}/artifacts"
        response = self._request("POST", url, json=body.model_dump(), headers=self._lease(token))
        return ArtifactOut.model_validate(response.json())

    def finalize_artifact(
        self, attempt_id: str, token: str, artifact_id: str, digest: str, size_bytes: int
    ) -> ArtifactOut:
        """Commit an uploaded artifact; safe to repeat."""
        url = f"/v1/attempts/{attempt_id}/artifacts/{artifact_id}/finalize"
        body = ArtifactFinalizeIn(digest=digest, size_bytes=size_bytes).model_dump()
        return ArtifactOut.model_validate(
            self._request("POST", url, json=body, headers=self._lease(token)).json()
        )

    def fail_artifact(self, attempt_id: str, token: str, artifact_id: str, reason: str) -> ArtifactOut:
        """Record why an artifact will not be committed."""
        url = f"/v1/attempts/{attempt_id}/artifacts/{artifact_id}/fail"
        body = ArtifactFailIn(reason=reason[:2000]).model_dump()
        return ArtifactOut.model_validate(
            self._request("POST", url, json=body, headers=self._lease(token)).json()
        )

    def needed_artifacts(self, attempt_id: str, token: str) -> list[NeededArtifactOut]:
        """The artifacts of the jobs this attempt's job needs, each with its state."""
        response = self._request(
            "GET", f"/v1/attempts/{attempt_id}/needed-artifacts", headers=self._lease(token)
        )
        return [NeededArtifactOut.model_validate(item) for item in response.json()]

    def list_artifacts(self, run_id: str, *, everything: bool = False) -> list[ArtifactOut]:
        response = self._request("GET", f"/v1/runs/{run_id}/artifacts", params={"all": everything})
        return [ArtifactOut.model_validate(item) for item in response.json()]

    def get_artifact(self, run_id: str, name: str, *, job: str | None = None) -> ArtifactOut:
        params = {"job": job} if job else {}
        response = self._request("GET", f"/v1/runs/{run_id}/artifacts/{name}", params=params)
        return ArtifactOut.model_validate(response.json())

    @contextmanager
    def download_artifact(
        self, run_id: str, name: str, *, job: str | None = None
    ) -> Iterator[httpx.Response]:
        """Stream an artifact's archive (the caller verifies its digest)."""
        params = {"job": job} if job else {}
        with self._stream(f"/v1/runs/{run_id}/artifacts/{name}/archive", params=params) as response:
            yield response

    # -- blobs (through grants; see kiln.runner.blobs) ----------------------------------------------

    def start_blob_upload(self, attempt_id: str, token: str, body: UploadStartIn) -> UploadStartOut:
        """Open (or resume) an upload session, or learn that the blob is already stored."""
        url = f"/v1/attempts/{attempt_id}/blobs/uploads"
        response = self._request("POST", url, json=body.model_dump(), headers=self._lease(token))
        return UploadStartOut.model_validate(response.json())

    def blob_part_grants(
        self, attempt_id: str, token: str, session_id: str, part_numbers: list[int]
    ) -> PartGrantsOut:
        """Fresh grants for parts of an upload session (or its single PUT)."""
        url = f"/v1/attempts/{attempt_id}/blobs/uploads/{session_id}/grants"
        body = PartGrantsIn(part_numbers=part_numbers).model_dump()
        return PartGrantsOut.model_validate(
            self._request("POST", url, json=body, headers=self._lease(token)).json()
        )

    def complete_blob_upload(
        self, attempt_id: str, token: str, session_id: str, body: UploadCompleteIn
    ) -> UploadCompleteOut:
        """Have the control plane complete the upload and check the stored blob (safe to repeat)."""
        url = f"/v1/attempts/{attempt_id}/blobs/uploads/{session_id}/complete"
        response = self._request("POST", url, json=body.model_dump(), headers=self._lease(token))
        return UploadCompleteOut.model_validate(response.json())

    def abort_blob_upload(self, attempt_id: str, token: str, session_id: str) -> None:
        """Abort an upload session (safe to repeat)."""
        url = f"/v1/attempts/{attempt_id}/blobs/uploads/{session_id}/abort"
        self._request("POST", url, headers=self._lease(token))

    def blob_download_grant(self, attempt_id: str, token: str, digest: str) -> DownloadGrantOut:
        """A GET grant for one blob (BlobNotFound if it is not stored or not the tenant's)."""
        url = f"/v1/attempts/{attempt_id}/blobs/download"
        body = DownloadGrantIn(digest=digest).model_dump()
        return DownloadGrantOut.model_validate(
            self._request("POST", url, json=body, headers=self._lease(token)).json()
        )

    # -- scale-out: identity, runner registration, giving a job back, tokens, tenants ---------------

    def with_token(self, token: str) -> ControlPlaneClient:
        """A client of the same server that presents ``token`` instead (e.g. after registering)."""
        return ControlPlaneClient(
            self.base_url,
            token,
            retry_deadline_s=self._retry_deadline_s,
            timeout_s=self._http.timeout.read or 30.0,
            sleep=self._sleep,
            clock=self._clock,
        )

    def whoami(self) -> PrincipalOut:
        return PrincipalOut.model_validate(self._request("GET", "/v1/whoami").json())

    def register_runner(self, name: str | None, labels: list[str]) -> RegisteredOut:
        """Register this runner (with a registration or admin token); the answer holds its own token."""
        body = RegisterIn(name=name, labels=labels).model_dump()
        return RegisteredOut.model_validate(self._request("POST", "/v1/runners/register", json=body).json())

    def release(self, attempt_id: str, token: str, reason: str) -> None:
        """Give the job back: it is queued again and this attempt ends (the runner is stopping)."""
        body = ReleaseIn(reason=reason[:2000]).model_dump()
        self._request("POST", f"/v1/attempts/{attempt_id}/release", json=body, headers=self._lease(token))

    def list_runs(self, *, tenant: str | None = None, limit: int = 50) -> list[RunSummaryOut]:
        params: dict[str, Any] = {"limit": limit, **({"tenant": tenant} if tenant else {})}
        response = self._request("GET", "/v1/runs", params=params)
        return [RunSummaryOut.model_validate(item) for item in response.json()]

    def create_token(self, body: TokenCreateIn) -> TokenCreatedOut:
        response = self._request("POST", "/v1/tokens", json=body.model_dump())
        return TokenCreatedOut.model_validate(response.json())

    def list_tokens(self, *, tenant: str | None = None, revoked: bool = False) -> list[TokenOut]:
        params: dict[str, Any] = {"revoked": revoked, **({"tenant": tenant} if tenant else {})}
        response = self._request("GET", "/v1/tokens", params=params)
        return [TokenOut.model_validate(item) for item in response.json()]

    def revoke_token(self, token_id: str) -> TokenOut:
        return TokenOut.model_validate(self._request("POST", f"/v1/tokens/{token_id}/revoke").json())

    def create_tenant(self, name: str) -> TenantOut:
        response = self._request("POST", "/v1/tenants", json=TenantIn(name=name).model_dump())
        return TenantOut.model_validate(response.json())

    def list_tenants(self) -> list[TenantOut]:
        return [TenantOut.model_validate(item) for item in self._request("GET", "/v1/tenants").json()]

    def create_repository(self, tenant: str, name: str) -> RepositoryOut:
        body = RepositoryIn(name=name).model_dump()
        response = self._request("POST", f"/v1/tenants/{tenant}/repositories", json=body)
        return RepositoryOut.model_validate(response.json())

    def list_repositories(self, tenant: str) -> list[RepositoryOut]:
        response = self._request("GET", f"/v1/tenants/{tenant}/repositories")
        return [RepositoryOut.model_validate(item) for item in response.json()]
