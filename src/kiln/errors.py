"""kiln's one error tree.

Every error kiln raises on purpose derives from :class:`KilnError`. Each class's docstring is its
default message; ``exit_code`` is what the CLI exits with and ``http_status`` what the API answers.
Foreign errors (SQLAlchemy, botocore, bwrap exit codes, OS errors) are translated once, at the
boundary that catches them, with ``raise KilnX(...) from exc`` so the cause is kept.

Exit codes are a contract: 0 all jobs succeeded, 1 a job failed, 2 usage or invalid workflow,
3 infrastructure unavailable or broken. Finer distinctions go into the message, never new codes.

Our exception hierarchy::

    KilnError
    ├── UsageError                      exit 2, HTTP 400
    │   └── WorkflowInvalid             exit 2, HTTP 422  (every problem, each with file:line:col)
    ├── NotFound                        exit 2, HTTP 404
    ├── Unauthorized                    exit 2, HTTP 401
    ├── Forbidden                       exit 2, HTTP 403  (a valid token that does not allow this)
    ├── Conflict                        exit 3, HTTP 409
    │   ├── IllegalTransition           a state change the state machine does not allow
    │   ├── LeaseLost                   the caller no longer holds the job's lease (fenced)
    │   └── AlreadyCommitted            create-only commit lost the race
    ├── IntegrityError                  exit 3, HTTP 422
    │   └── DigestMismatch              bytes do not hash to the digest they claim
    ├── JobError                        exit 1
    │   ├── ArtifactUnavailable         a needed artifact is missing, failed or expired
    │   └── ImageBuildFailed            a step of the job's image failed, or its definition is unusable
    └── InfrastructureError             exit 3, HTTP 503
        ├── DatabaseUnavailable
        ├── StorageUnavailable
        │   ├── BlobNotFound            (HTTP 404)
        │   ├── UploadNotFound          (HTTP 404)
        │   └── StorageRefused          a permanent refusal (credentials, bucket); not retried
        ├── SandboxUnavailable          names the missing kernel feature or tool
        ├── ImageSourceUnavailable      a registry or package mirror an image needs is unreachable
        └── ControlPlaneUnavailable     the runner cannot reach the server
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AlreadyCommitted",
    "ArtifactUnavailable",
    "BlobNotFound",
    "Conflict",
    "ControlPlaneUnavailable",
    "DatabaseUnavailable",
    "DigestMismatch",
    "Forbidden",
    "IllegalTransition",
    "ImageBuildFailed",
    "ImageSourceUnavailable",
    "InfrastructureError",
    "IntegrityError",
    "JobError",
    "KilnError",
    "LeaseLost",
    "NotFound",
    "SandboxUnavailable",
    "SpecProblem",
    "StorageRefused",
    "StorageUnavailable",
    "Unauthorized",
    "UploadNotFound",
    "UsageError",
    "WorkflowInvalid",
]


class KilnError(Exception):
    """kiln failed."""

    exit_code: int = 3
    http_status: int = 500

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (type(self).__doc__ or type(self).__name__).strip()
        super().__init__(self.message)


# -- the user's mistakes ---------------------------------------------------------------------------


class UsageError(KilnError):
    """The command was used wrongly."""

    exit_code = 2
    http_status = 400


@dataclass(frozen=True)
class SpecProblem:
    """One problem in a workflow file, located as precisely as the YAML allows."""

    file: str
    line: int  # 1-based
    column: int  # 1-based
    loc: tuple[str | int, ...]  # path in the document, e.g. ("jobs", "build", "steps", 2, "run")
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class WorkflowInvalid(UsageError):
    """The workflow file is invalid."""

    http_status = 422

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems) or None)


class NotFound(KilnError):
    """No such object."""

    exit_code = 2
    http_status = 404


class Unauthorized(KilnError):
    """Missing, unknown, expired or revoked token."""

    exit_code = 2
    http_status = 401


class Forbidden(KilnError):
    """This token does not allow this request."""

    exit_code = 2
    http_status = 403


# -- races and fencing -----------------------------------------------------------------------------


class Conflict(KilnError):
    """The object changed under the request."""

    http_status = 409


class IllegalTransition(Conflict):
    """The state machine does not allow this transition."""


class LeaseLost(Conflict):
    """This runner no longer holds the lease of the job; it must stop working on it."""


class AlreadyCommitted(Conflict):
    """Another writer committed this identity first."""


# -- bytes that are not what they claim ------------------------------------------------------------


class IntegrityError(KilnError):
    """Stored data failed verification."""

    http_status = 422


class DigestMismatch(IntegrityError):
    """The bytes do not hash to the expected digest."""


# -- failures that are the job's, not kiln's -------------------------------------------------------


class JobError(KilnError):
    """The job cannot run as declared."""

    exit_code = 1
    http_status = 409


class ArtifactUnavailable(JobError):
    """A needed artifact is missing, failed or expired."""


class ImageBuildFailed(JobError):
    """The job's image could not be built from its definition."""


# -- infrastructure --------------------------------------------------------------------------------


class InfrastructureError(KilnError):
    """Infrastructure is unavailable or broken."""

    exit_code = 3
    http_status = 503


class DatabaseUnavailable(InfrastructureError):
    """The metadata database is unavailable."""


class StorageUnavailable(InfrastructureError):
    """Object storage is unavailable."""


class BlobNotFound(StorageUnavailable):
    """No blob with this digest is stored."""

    http_status = 404


class UploadNotFound(StorageUnavailable):
    """No such upload session (it was completed or aborted)."""

    http_status = 404


class StorageRefused(StorageUnavailable):
    """Object storage refused the request (credentials, permissions, bucket); retrying won't help."""


class SandboxUnavailable(InfrastructureError):
    """The sandbox cannot start: a kernel feature or tool it needs is missing."""


class ImageSourceUnavailable(InfrastructureError):
    """A registry or package mirror the image needs cannot be reached."""


class ControlPlaneUnavailable(InfrastructureError):
    """The control plane cannot be reached."""
