"""Who is calling, and what their token lets them do: one dependency for every ``/v1`` route.

Four kinds of bearer token, plus the job token:

========================  ======================================================================
kind                      may
========================  ======================================================================
``admin``                 everything, for every tenant (the server's admin token, or a stored one)
``user``                  its tenant's runs, logs, sources, caches and artifacts; scopes ``read``,
                          ``write`` (submit, cancel, upload, remove) and ``tokens`` (manage the
                          tenant's tokens and repositories)
``registration``          register runners (``POST /v1/runners/register``), nothing else
``runner``                lease jobs (``POST /v1/lease``), as the one runner it was issued to, of
                          its tenant only when it has one
``job``                   everything its runner does for one attempt: the ``/v1/attempts/{id}/…``
                          routes of that attempt, and the run's source snapshot
========================  ======================================================================

The job token is the attempt's lease token, sent in ``X-Kiln-Lease`` (as a bearer token it is
accepted where a job may read outside its attempt's routes: its run's source, ``whoami``). It is
valid while its attempt runs and its lease has not expired: a job token of another attempt is
refused (403), and one whose attempt ended or whose lease expired is ``LeaseLost`` (409), which
tells a late runner to stop. Unknown, revoked and expired bearer tokens get 401 with nothing else
said. A token of tenant A asking for tenant B's objects gets 404, as if they did not exist: the
route handlers check the tenant (:meth:`Principal.sees`).

Routes get the caller with ``Depends(current_principal)``; ``request.state.tenant`` holds the
caller's tenant too (``None`` for an admin, who sees every tenant).
"""

from __future__ import annotations

import hmac
import re
import secrets as secrets_module
from dataclasses import dataclass
from enum import StrEnum

from fastapi import Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from kiln.api.plane import ControlPlane
from kiln.errors import Forbidden, LeaseLost, NotFound, Unauthorized
from kiln.metadata import auth as auth_sql
from kiln.scheduler.service import JOB_TOKEN_PREFIX

__all__ = [
    "TOKEN_PREFIXES",
    "USER_SCOPES",
    "Principal",
    "PrincipalKind",
    "authenticate",
    "current_principal",
    "new_secret",
    "scoped_tenant",
    "tenant_filter",
]


class PrincipalKind(StrEnum):
    ADMIN = "admin"
    USER = "user"
    REGISTRATION = "registration"
    RUNNER = "runner"
    JOB = "job"


USER_SCOPES = ("read", "write", "tokens")
# Recognisable prefixes: a leaked token says what it is, and secret scanners can match them.
TOKEN_PREFIXES = {
    PrincipalKind.ADMIN: "kiln_adm_",
    PrincipalKind.USER: "kiln_usr_",
    PrincipalKind.REGISTRATION: "kiln_reg_",
    PrincipalKind.RUNNER: "kiln_run_",
    PrincipalKind.JOB: JOB_TOKEN_PREFIX,
}

# Routes a token of each restricted kind may call (as patterns of the request's path: the matched
# route's template is not public API in every FastAPI version). Users and admins may call
# everything but the runner routes; every /v1/attempts/{attempt_id}/… route needs the job token of
# that attempt.
_WHOAMI = re.compile(r"/v1/whoami")
_SOURCE = re.compile(r"/v1/sources/[^/]+")
_LEASE = re.compile(r"/v1/lease")
_REGISTER = re.compile(r"/v1/runners/register")
_JOB_ROUTES = (_SOURCE, _WHOAMI)
_RUNNER_ROUTES = (_LEASE, _WHOAMI)
_REGISTRATION_ROUTES = (_REGISTER, _WHOAMI)
_RUNNER_ONLY_ROUTES = (_LEASE, _REGISTER)
_READ_METHODS = {"GET", "HEAD", "OPTIONS"}


def _matches(path: str, patterns: tuple[re.Pattern[str], ...]) -> bool:
    return any(p.fullmatch(path) for p in patterns)


def new_secret(kind: PrincipalKind) -> str:
    """A new token of ``kind``: its prefix and 256 random bits."""
    return TOKEN_PREFIXES[kind] + secrets_module.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    kind: PrincipalKind
    tenant: str | None  # None: every tenant (admins, runners not bound to a tenant)
    scopes: frozenset[str] = frozenset()
    token_id: str | None = None
    name: str = ""
    runner_id: str | None = None
    job: auth_sql.JobGrantRecord | None = None  # job tokens: what the token was issued for

    @property
    def is_admin(self) -> bool:
        return self.kind is PrincipalKind.ADMIN

    def sees(self, tenant: str) -> bool:
        """Whether objects of ``tenant`` exist for this caller (otherwise: 404)."""
        return self.tenant is None or self.tenant == tenant

    def require_tenant(self, tenant: str) -> None:
        """Raise :class:`NotFound` unless the caller sees ``tenant``."""
        if not self.sees(tenant):
            raise NotFound(f"no tenant {tenant!r}")

    def require_scope(self, scope: str) -> None:
        """Raise :class:`Forbidden` unless the caller is an admin or holds ``scope``."""
        if not self.is_admin and scope not in self.scopes:
            raise Forbidden(f"this token lacks the {scope!r} scope")


_ADMIN = Principal(PrincipalKind.ADMIN, None, frozenset({"admin"}), name="server admin token")


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _job_principal(cp: ControlPlane, token: str) -> Principal:
    with cp.scheduler.db.read_session() as session:
        grant = auth_sql.find_job_grant(session, token)
    if grant is None:
        raise Unauthorized()
    if grant.attempt_status != "running":
        raise LeaseLost(
            f"attempt {grant.attempt_id} has ended ({grant.attempt_status}): its job token is no longer valid"
        )
    if grant.lease_expires_at < cp.scheduler.now():
        raise LeaseLost(
            f"the lease of attempt {grant.attempt_id} expired at {grant.lease_expires_at.isoformat()}: "
            "its job token is no longer valid"
        )
    return Principal(
        PrincipalKind.JOB,
        grant.tenant,
        frozenset({"job"}),
        name=f"job {grant.job_name} of run {grant.run_id}",
        runner_id=grant.runner_id,
        job=grant,
    )


def _token_principal(cp: ControlPlane, token: str) -> Principal:
    if cp.api_token is not None and hmac.compare_digest(token.encode(), cp.api_token.encode()):
        return _ADMIN
    if token.startswith(JOB_TOKEN_PREFIX):
        return _job_principal(cp, token)
    with cp.scheduler.db.read_session() as session:
        found = auth_sql.find_token(session, token)
    now = cp.scheduler.now()
    if (
        found is None
        or found.revoked_at is not None
        or (found.expires_at is not None and found.expires_at <= now)
    ):
        raise Unauthorized()
    return Principal(
        PrincipalKind(found.kind),
        found.tenant,
        frozenset(found.scopes),
        token_id=found.token_id,
        name=found.name,
        runner_id=found.runner_id,
    )


def _resolve(request: Request, cp: ControlPlane) -> Principal:
    path: str = request.scope["path"]
    path = path.removeprefix(request.scope.get("root_path", "")) or path
    bearer, lease = _bearer(request), request.headers.get("x-kiln-lease")
    attempt_id = request.path_params.get("attempt_id")

    if attempt_id is not None:
        # An attempt's routes: its job token (in X-Kiln-Lease) and nothing else.
        if not lease:
            raise Unauthorized()
        principal = _job_principal(cp, lease)
        assert principal.job is not None
        if principal.job.attempt_id != attempt_id:
            raise Forbidden("this job token was issued for another job")
        return principal

    if lease and _matches(path, _JOB_ROUTES):
        principal = _job_principal(cp, lease)
    elif bearer is not None:
        principal = _token_principal(cp, bearer)
    elif cp.api_token is None and not cp.require_auth:
        # Library use without any token configured (tests, tools); `kiln server` never runs so.
        principal = _ADMIN
    else:
        raise Unauthorized()

    allowed = {
        PrincipalKind.JOB: _JOB_ROUTES,
        PrincipalKind.RUNNER: _RUNNER_ROUTES,
        PrincipalKind.REGISTRATION: _REGISTRATION_ROUTES,
    }.get(principal.kind)
    # A job token outside its attempt's routes only reads (its run's source, whoami).
    read_only = principal.kind is PrincipalKind.JOB and request.method not in _READ_METHODS
    if allowed is not None and (read_only or not _matches(path, allowed)):
        raise Forbidden(f"a {principal.kind} token cannot call {request.method} {path}")
    if principal.kind is PrincipalKind.USER:
        if _matches(path, _RUNNER_ONLY_ROUTES):
            raise Forbidden(f"a user token cannot call {request.method} {path}")
        needed = "read" if request.method in _READ_METHODS else "write"
        if not _WHOAMI.fullmatch(path):
            principal.require_scope(needed)
    return principal


# Declared for the OpenAPI document only: _resolve reads the headers itself.
_BEARER_SCHEME = HTTPBearer(auto_error=False, description="A user, admin, registration or runner token.")
_LEASE_SCHEME = APIKeyHeader(
    name="X-Kiln-Lease", auto_error=False, description="The job token of an attempt (its lease token)."
)


def authenticate(
    request: Request,
    _bearer_doc: HTTPAuthorizationCredentials | None = Security(_BEARER_SCHEME),
    _lease_doc: str | None = Security(_LEASE_SCHEME),
) -> Principal:
    """The router dependency of every ``/v1`` route: resolve the caller or refuse the request.

    Raises
    ------
    Unauthorized
        No token, or an unknown, revoked or expired one (401, nothing else said).
    Forbidden
        A valid token that does not allow this route (403).
    LeaseLost
        A job token whose attempt has ended or whose lease expired (409).
    """
    cp: ControlPlane = request.app.state.plane
    principal = _resolve(request, cp)
    request.state.principal = principal
    request.state.tenant = principal.tenant
    return principal


def current_principal(request: Request) -> Principal:
    """The caller of this request, as :func:`authenticate` resolved it (for route handlers)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # a route mounted without the dependency: resolve now
        principal = authenticate(request, None, None)
    return principal


def tenant_filter(
    request: Request, tenant: str | None = Query(None, description="Only this tenant's.")
) -> str | None:
    """The tenant a listing is about: the caller's own, or for an admin the one asked for (or all).

    A user asking for another tenant gets 404, as if it did not exist.
    """
    principal = current_principal(request)
    if tenant is not None:
        principal.require_tenant(tenant)
        return tenant
    return principal.tenant


def scoped_tenant(
    request: Request,
    tenant: str | None = Query(None, description="The tenant (admins); other callers get their own."),
) -> str:
    """The one tenant a request acts on: the caller's own, or for an admin the one named ("local").

    A user naming another tenant gets 404, as if it did not exist.
    """
    principal = current_principal(request)
    if principal.tenant is not None:
        if tenant is not None:
            principal.require_tenant(tenant)
        return principal.tenant
    return tenant or "local"
