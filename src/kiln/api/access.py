"""Tokens, tenants, repositories and runner registration: the decisions behind their routes.

Who may do what (the caller is a :class:`~kiln.api.auth.Principal`):

* admins create tenants and tokens of every kind, and see and revoke every token;
* a user token with the ``tokens`` scope creates user tokens of its own tenant with at most its own
  scopes (no escalation), registration tokens bound to its tenant, and lists and revokes its
  tenant's tokens;
* a registration token (or an admin) registers runners: each registration mints a runner token
  bound to that runner (and to the registration token's tenant, if it has one), and revokes the
  tokens earlier registrations under the same name were given.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import timedelta
from pathlib import Path

from kiln.api.access_models import RegisteredOut, TokenCreatedOut, TokenCreateIn, TokenOut
from kiln.api.auth import USER_SCOPES, Principal, PrincipalKind, new_secret
from kiln.errors import Forbidden, NotFound, UsageError
from kiln.metadata import auth as auth_sql
from kiln.metadata import runs as runs_sql
from kiln.metadata.ids import new_id
from kiln.scheduler import Scheduler

__all__ = ["AccessService", "bootstrap_admin_token", "create_admin_token"]

logger = logging.getLogger(__name__)


def _out(record: auth_sql.TokenRecord) -> TokenOut:
    return TokenOut(
        token_id=record.token_id,
        kind=record.kind,
        tenant=record.tenant,
        name=record.name,
        scopes=list(record.scopes),
        runner_id=record.runner_id,
        created_at=record.created_at,
        expires_at=record.expires_at,
        revoked_at=record.revoked_at,
    )


class AccessService:
    """Tokens, tenants and runner registration over the scheduler's database and clock."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._db = scheduler.db

    # -- tokens ------------------------------------------------------------------------------------

    def create_token(self, caller: Principal, body: TokenCreateIn) -> TokenCreatedOut:
        """Mint a token; the secret is in the answer and nowhere else.

        Raises
        ------
        Forbidden
            The caller may not create this token.
        NotFound
            No such tenant (or one the caller does not see).
        UsageError
            A user token without a tenant, an admin token with one, scopes on a non-user token.
        """
        kind = PrincipalKind(body.kind)
        tenant = body.tenant if body.tenant is not None else (None if caller.is_admin else caller.tenant)
        if kind is PrincipalKind.ADMIN:
            if not caller.is_admin:
                raise Forbidden("only an admin may create admin tokens")
            if tenant is not None:
                raise UsageError("an admin token belongs to no tenant: leave out the tenant")
        elif not caller.is_admin:
            caller.require_scope("tokens")
            if tenant is None:
                raise Forbidden("only an admin may create tokens for every tenant")
            caller.require_tenant(tenant)
        if kind is PrincipalKind.USER and tenant is None:
            raise UsageError("a user token belongs to a tenant: name one")
        if kind is not PrincipalKind.USER and body.scopes:
            raise UsageError(f"scopes apply to user tokens only, not to {kind} tokens")
        scopes = tuple(body.scopes or ("read", "write")) if kind is PrincipalKind.USER else ()
        if kind is PrincipalKind.USER and not caller.is_admin:
            escalated = sorted(set(scopes) - caller.scopes)
            if escalated:
                raise Forbidden(f"a token cannot grant scopes it does not hold: {', '.join(escalated)}")
        scopes = tuple(s for s in USER_SCOPES if s in scopes)
        if kind is PrincipalKind.REGISTRATION:
            scopes = ("register",)
        if kind is PrincipalKind.ADMIN:
            scopes = ("admin",)
        now = self._scheduler.now()
        secret = new_secret(kind)
        with self._db.session() as session:
            tenant_id = None
            if tenant is not None:
                tenant_id = auth_sql.tenant_id_of(session, tenant)
                if tenant_id is None:
                    raise NotFound(f"no tenant {tenant!r}")
            record = auth_sql.insert_token(
                session,
                token_id=new_id(now),
                secret=secret,
                kind=kind.value,
                tenant_id=tenant_id,
                name=body.name,
                scopes=scopes,
                at=now,
                created_by=caller.token_id,
                expires_at=now + timedelta(seconds=body.expires_in_s) if body.expires_in_s else None,
            )
        logger.info(
            "Token %s (%s) created for %s.",
            record.token_id,
            kind,
            tenant or "every tenant",
            extra={
                "action": "token_created",
                "token_id": record.token_id,
                "kind": kind.value,
                "tenant": tenant,
            },
        )
        return TokenCreatedOut(**_out(record).model_dump(), token=secret)

    def list_tokens(self, caller: Principal, tenant: str | None, *, include_revoked: bool) -> list[TokenOut]:
        """The tokens the caller may manage: every one for an admin, its tenant's for a user."""
        if not caller.is_admin:
            caller.require_scope("tokens")
            if tenant is not None:
                caller.require_tenant(tenant)
            tenant = caller.tenant
        with self._db.read_session() as session:
            records = auth_sql.list_tokens(session, tenant=tenant, include_revoked=include_revoked)
        return [_out(r) for r in records]

    def revoke_token(self, caller: Principal, token_id: str) -> TokenOut:
        """Revoke a token at once; revoking it again changes nothing.

        Raises
        ------
        NotFound
            No such token, or one of a tenant the caller does not manage.
        """
        now = self._scheduler.now()
        with self._db.session() as session:
            found = auth_sql.get_token(session, token_id)
            visible = found is not None and (
                caller.is_admin
                or ("tokens" in caller.scopes and found.tenant is not None and found.tenant == caller.tenant)
            )
            if found is None or not visible:
                raise NotFound(f"no token {token_id}")
            auth_sql.revoke_token(session, token_id, at=now)
            record = auth_sql.get_token(session, token_id)
        assert record is not None
        logger.info("Token %s revoked.", token_id, extra={"action": "token_revoked", "token_id": token_id})
        return _out(record)

    # -- runners -----------------------------------------------------------------------------------

    def register_runner(self, caller: Principal, name: str | None, labels: list[str]) -> RegisteredOut:
        """Register a runner and mint its token (revoking tokens of earlier runners of that name).

        Raises
        ------
        Forbidden
            The caller is neither an admin nor holds a registration token.
        """
        if not (caller.is_admin or caller.kind is PrincipalKind.REGISTRATION):
            raise Forbidden("registering a runner needs a registration token")
        runner_id = name or f"runner-{uuid.uuid4().hex[:12]}"
        now = self._scheduler.now()
        secret = new_secret(PrincipalKind.RUNNER)
        with self._db.session() as session:
            tenant_id = None
            if caller.tenant is not None:
                tenant_id = auth_sql.tenant_id_of(session, caller.tenant)
                if tenant_id is None:  # deleted since the token was made
                    raise NotFound(f"no tenant {caller.tenant!r}")
            replaced = auth_sql.revoke_runner_tokens(session, runner_id, at=now)
            auth_sql.register_runner(session, runner_id, name=runner_id, labels=labels, at=now)
            auth_sql.insert_token(
                session,
                token_id=new_id(now),
                secret=secret,
                kind=PrincipalKind.RUNNER.value,
                tenant_id=tenant_id,
                name=f"runner {runner_id}",
                scopes=("lease",),
                at=now,
                runner_id=runner_id,
                created_by=caller.token_id,
            )
        logger.info(
            "Runner %s registered%s.",
            runner_id,
            " again (its earlier token is revoked)" if replaced else "",
            extra={"action": "runner_registered", "runner_id": runner_id, "tenant": caller.tenant},
        )
        return RegisteredOut(runner_id=runner_id, tenant=caller.tenant, token=secret)

    # -- tenants and repositories ------------------------------------------------------------------

    def create_tenant(self, caller: Principal, name: str) -> tuple[auth_sql.TenantRecord, bool]:
        """Create a tenant (admins only); an existing one is returned as it is."""
        if not caller.is_admin:
            raise Forbidden("only an admin may create tenants")
        with self._db.session() as session:
            _, created = auth_sql.create_tenant(session, name)
            record = auth_sql.get_tenant(session, name)
        assert record is not None
        if created:
            logger.info("Tenant %s created.", name, extra={"action": "tenant_created", "tenant": name})
        return record, created

    def list_tenants(self, caller: Principal) -> list[auth_sql.TenantRecord]:
        """Every tenant for an admin; its own for anyone else."""
        with self._db.read_session() as session:
            found = auth_sql.list_tenants(session)
        return [t for t in found if caller.sees(t.name)]

    def get_tenant(self, caller: Principal, name: str) -> auth_sql.TenantRecord:
        caller.require_tenant(name)
        with self._db.read_session() as session:
            found = auth_sql.get_tenant(session, name)
        if found is None:
            raise NotFound(f"no tenant {name!r}")
        return found

    def list_repositories(self, caller: Principal, tenant: str) -> list[auth_sql.RepositoryRecord]:
        caller.require_tenant(tenant)
        with self._db.read_session() as session:
            tenant_id = auth_sql.tenant_id_of(session, tenant)
            if tenant_id is None:
                raise NotFound(f"no tenant {tenant!r}")
            return auth_sql.list_repositories(session, tenant_id)

    def create_repository(self, caller: Principal, tenant: str, name: str) -> auth_sql.RepositoryRecord:
        """Create a repository of the tenant (admins, or the tenant's ``write`` tokens)."""
        caller.require_tenant(tenant)
        caller.require_scope("write")
        with self._db.session() as session:
            tenant_id = auth_sql.tenant_id_of(session, tenant)
            if tenant_id is None:
                raise NotFound(f"no tenant {tenant!r}")
            runs_sql.get_or_create_repository(session, tenant_id, name)
            found = [r for r in auth_sql.list_repositories(session, tenant_id) if r.name == name]
        return found[0]

    # -- source snapshots --------------------------------------------------------------------------

    def may_use_source(self, caller: Principal, digest: str) -> bool:
        """Whether the caller may fetch the source snapshot ``digest`` or name it in a run.

        A job may fetch its run's source; a user the sources its tenant uploaded (or ran); an
        admin any.
        """
        if caller.job is not None:
            return caller.job.source_digest == digest
        if caller.is_admin or caller.tenant is None:
            return caller.is_admin
        with self._db.read_session() as session:
            tenant_id = auth_sql.tenant_id_of(session, caller.tenant)
            return tenant_id is not None and auth_sql.tenant_has_source(session, tenant_id, digest)

    def record_source(self, caller: Principal, digest: str) -> None:
        """Record that the caller's tenant uploaded ``digest`` (admins' uploads are recorded when a
        run names them)."""
        if caller.tenant is None or caller.job is not None:
            return
        now = self._scheduler.now()
        with self._db.session() as session:
            tenant_id = auth_sql.tenant_id_of(session, caller.tenant)
            if tenant_id is None:
                raise NotFound(f"no tenant {caller.tenant!r}")
            auth_sql.record_source(session, tenant_id, digest, at=now)


# -- the admin token -------------------------------------------------------------------------------


def create_admin_token(scheduler: Scheduler, name: str) -> str:
    """Store a new admin token and return its secret (for ``kiln server admin-token``)."""
    caller = Principal(PrincipalKind.ADMIN, None, frozenset({"admin"}))
    created = AccessService(scheduler).create_token(caller, TokenCreateIn(kind="admin", name=name))
    return created.token


def bootstrap_admin_token(scheduler: Scheduler, path: Path) -> Path | None:
    """On a server's first start: create an admin token and write it to ``path`` (mode 0600).

    Nothing happens when a live admin token exists already (in the database). Returns the path
    written, or ``None``.
    """
    with scheduler.db.read_session() as session:
        live = [t for t in auth_sql.list_tokens(session) if t.kind == PrincipalKind.ADMIN.value]
    if live:
        return None
    secret = create_admin_token(scheduler, f"bootstrap admin token of {socket.gethostname()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
    return path
