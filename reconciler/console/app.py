"""The web console: a Starlette application rendering Jinja2 templates on the server.

Every page and action runs in one transaction as the signed-in member (see store.py); what a
member may not see does not exist for them (404, the same as a wrong id), and what they may not
do is not offered and is refused by the database anyway (403).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import jinja2
import markupsafe
import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from reconciler.console.identity import InvalidToken, Member, Verifier, csrf_ok, csrf_token
from reconciler.console.store import Session, Store, UnknownUser
from reconciler.console.text import clean, like_pattern

COOKIE = "ops_console_session"
PAGE_SIZE = 50
RECENT_RUNS = 50
LOG_BATCH = 2000
LOG_POLL_S = 0.25
STREAM_MAX_S = 3600
FINAL = ("succeeded", "failed", "canceled")
OPERATORS = ("owner", "admin", "developer")
PACKAGE = Path(__file__).parent
PUBLIC = ("/login", "/logout", "/static/")
MAX_FORM_BYTES = 64 * 1024
STREAMS_PER_MEMBER = 10  # live-log streams one person may hold open at once (tabs of runs)
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cache-control": "no-store",
}


@dataclass(frozen=True)
class Settings:
    conninfo: str
    verifier: Verifier
    artifacts_dir: Path
    secure_cookies: bool = False


class NotFound(Exception):
    pass


UNKNOWN_USER = "the token's user does not exist (any more); ask an operator for a new token"


class Console:
    """The routes and what they share: the store, the verifier, the templates, the CSRF key."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.conninfo)
        self.csrf_key = secrets.token_bytes(32)
        # Behind HTTPS the cookie is __Host-: a sibling subdomain cannot plant (fixate) or
        # shadow a session in it, since browsers accept that name only Secure, host-only, Path=/.
        self.cookie = f"__Host-{COOKIE}" if settings.secure_cookies else COOKIE
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("reconciler.console", "templates"),
            autoescape=True,
            finalize=_finalize,
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters["short"] = lambda sha: (sha or "")[:12]
        self.templates.filters["when"] = _when
        # join's items are escaped but never reach finalize: clean them as every other value.
        self.templates.filters["join"] = _join
        self.streams: dict[uuid.UUID, int] = {}

    # -- plumbing ---------------------------------------------------------------------------

    def page(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        member: Member | None = getattr(request.state, "member", None)
        html = self.templates.get_template(name).render(
            member=member,
            csrf=csrf_token(self.csrf_key, member) if member else "",
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def error(self, request: Request, status: int, message: str) -> HTMLResponse:
        return self.page(request, "error.html", status=status, status_code=status, message=message)

    def set_session(self, response: Response, member: Member) -> None:
        response.set_cookie(
            self.cookie,
            member.token,
            max_age=max(0, member.expires_at - int(time.time())),
            httponly=True,
            samesite="strict",
            secure=self.settings.secure_cookies,
            path="/",
        )

    def clear_session(self, response: Response) -> None:
        response.delete_cookie(
            self.cookie,
            path="/",
            httponly=True,
            samesite="strict",
            secure=self.settings.secure_cookies,
        )

    # -- sign in and out --------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        if request.state.member is not None:
            return RedirectResponse("/", status_code=303)
        return self.page(request, "login.html", problem=None)

    async def login(self, request: Request) -> Response:
        form = await request.form()
        token = str(form.get("token") or "").strip()
        try:
            member = self.settings.verifier.verify(token)
        except InvalidToken as exc:
            return self.page(request, "login.html", status=401, problem=str(exc))
        try:
            async with self.store.as_member(member):
                pass
        except UnknownUser:
            return self.page(request, "login.html", status=401, problem=UNKNOWN_USER)
        response = RedirectResponse("/", status_code=303)
        self.set_session(response, member)
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        self.clear_session(response)
        return response

    # -- pages ------------------------------------------------------------------------------

    async def fleet(self, request: Request) -> Response:
        search = request.query_params.get("q", "").strip()[:200]
        after = request.query_params.get("after", "")[:200] or None
        before = None if after else request.query_params.get("before", "")[:200] or None
        params = {
            "pattern": like_pattern(search) if search else None,
            "after": after,
            "before": before,
            "limit": PAGE_SIZE + 1,
        }
        async with self.store.as_member(request.state.member) as db:
            rows = await db.all("console_fleet", params)
        more = len(rows) > PAGE_SIZE
        if more:
            rows = rows[1:] if before else rows[:-1]
        return self.page(
            request,
            "fleet.html",
            projects=[_fleet_row(row) for row in rows],
            search=search,
            next_after=rows[-1][0] if rows and (more or before) else None,
            prev_before=rows[0][0] if rows and (after or (before and more)) else None,
        )

    async def project(self, request: Request) -> Response:
        slug = request.path_params["slug"]
        async with self.store.as_member(request.state.member) as db:
            row = await db.one("console_project", {"slug": slug})
            if row is None:
                raise NotFound("no such project")  # not the address: no words of a link's author
            project_id, version = row[0], row[4]
            workflows = await db.all("console_workflows", {"project_id": project_id})
            members = await db.all("console_members", {"project_id": project_id})
            runs = await db.all(
                "console_recent_runs", {"project_id": project_id, "limit": RECENT_RUNS}
            )
            advisories = await db.all("console_advisories", {"version": version})
        return self.page(
            request,
            "project.html",
            project=row,
            role=row[6],
            can_operate=row[6] in OPERATORS,
            workflows=workflows,
            members=members,
            runs=runs,
            advisories=advisories,
        )

    async def run(self, request: Request) -> Response:
        run_id = _uuid(request.path_params["run_id"])
        after = _timestamp(request.query_params.get("after"))
        async with self.store.as_member(request.state.member) as db:
            row = await db.one("console_run", {"run_id": run_id})
            if row is None:
                raise NotFound("no such run")
            events = await db.all("console_run_events", {"run_id": run_id})
            artifacts = await db.all("console_run_artifacts", {"run_id": run_id})
            lines = await db.all(
                "console_logs_after",
                {"run_id": run_id, "after": after or "-infinity", "limit": LOG_BATCH},
            )
        return self.page(
            request,
            "run.html",
            run=row,
            final=row[2] in FINAL,
            can_operate=row[16] in OPERATORS,
            events=events,
            artifacts=artifacts,
            lines=lines,
            cursor=lines[-1][0].isoformat() if lines else (after.isoformat() if after else ""),
            paged=after is not None,
            more=len(lines) == LOG_BATCH,
        )

    async def history(self, request: Request) -> Response:
        before = _timestamp(request.query_params.get("before"))
        async with self.store.as_member(request.state.member) as db:
            applies = await db.all("console_applies", {"limit": PAGE_SIZE, "before": before})
        return self.page(
            request,
            "history.html",
            applies=applies,
            next_before=applies[-1][1].isoformat() if len(applies) == PAGE_SIZE else None,
        )

    async def artifact(self, request: Request) -> Response:
        run_id = _uuid(request.path_params["run_id"])
        artifact_id = _uuid(request.path_params["artifact_id"])
        async with self.store.as_member(request.state.member) as db:
            row = await db.one("console_artifact", {"run_id": run_id, "artifact_id": artifact_id})
        if row is None:
            raise NotFound("no such artifact")
        path = stored_file(self.settings.artifacts_dir, row[1])
        if path is None:
            raise NotFound("this artifact's file is not in the console's artifacts directory")
        return FileResponse(
            path,
            media_type="application/octet-stream",
            filename=clean(Path(row[0]).name, 200) or "artifact",
            headers={"content-security-policy": "sandbox", "x-content-type-options": "nosniff"},
        )

    # -- live logs --------------------------------------------------------------------------

    async def log_stream(self, request: Request) -> Response:
        run_id = _uuid(request.path_params["run_id"])
        start = request.headers.get("last-event-id") or request.query_params.get("after")
        after: Any = _timestamp(start) or "-infinity"
        member: Member = request.state.member
        async with self.store.as_member(member) as db:
            if await db.one("console_run_status", {"run_id": run_id}) is None:
                raise NotFound("no such run")
        if request.method == "HEAD":  # headers only: no stream to hold open for nobody
            return Response(media_type="text/event-stream")
        if self.streams.get(member.user_id, 0) >= STREAMS_PER_MEMBER:
            return self.error(
                request, 429, f"at most {STREAMS_PER_MEMBER} live logs at once; close a run's page"
            )
        return StreamingResponse(
            self._log_events(member, run_id, after),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def _log_events(
        self, member: Member, run_id: uuid.UUID, after: Any
    ) -> AsyncIterator[str]:
        """The run's new lines until it ends, counted against the member's open streams (a
        client that opens more than its share is ended at once, so no one person's streams
        crowd out everyone's pages)."""
        held = self.streams.get(member.user_id, 0)
        if held >= STREAMS_PER_MEMBER:
            yield _sse("end", {"status": "too-many-streams"})
            return
        self.streams[member.user_id] = held + 1
        try:
            async for event in self._follow(member, run_id, after):
                yield event
        except UnknownUser:
            yield _sse("end", {"status": "signed-out"})
        finally:
            left = self.streams.get(member.user_id, 1) - 1
            if left > 0:
                self.streams[member.user_id] = left
            else:
                self.streams.pop(member.user_id, None)

    async def _follow(self, member: Member, run_id: uuid.UUID, after: Any) -> AsyncIterator[str]:
        deadline = min(float(member.expires_at), time.time() + STREAM_MAX_S)
        while time.time() < deadline:
            async with self.store.as_member(member) as db:
                lines = await db.all(
                    "console_logs_after", {"run_id": run_id, "after": after, "limit": LOG_BATCH}
                )
                status = await db.one("console_run_status", {"run_id": run_id})
            if status is None:
                yield _sse("end", {"status": None})
                return
            if lines:
                after = lines[-1][0]
                payload = {"status": status[0], "lines": [_log_line(line) for line in lines]}
                yield _sse("lines", payload, event_id=after.isoformat())
            elif status[0] in FINAL:
                yield _sse("end", {"status": status[0]})
                return
            else:
                yield ": waiting\n\n"
            await asyncio.sleep(LOG_POLL_S)
        yield _sse("end", {"status": "session-expired"})

    # -- actions ----------------------------------------------------------------------------

    async def start_run(self, request: Request) -> Response:
        workflow_id = _uuid(request.path_params["workflow_id"])
        form = await request.form()
        params = {
            "workflow_id": workflow_id,
            "ref": str(form.get("ref") or "").strip()[:300] or None,
            "commit": str(form.get("commit") or "").strip()[:100] or None,
        }
        return await self._act(request, "console_request_run", params)

    async def retry_run(self, request: Request) -> Response:
        return await self._act(
            request, "console_retry_run", {"run_id": _uuid(request.path_params["run_id"])}
        )

    async def cancel_run(self, request: Request) -> Response:
        form = await request.form()
        run_id = _uuid(request.path_params["run_id"])
        reason = str(form.get("reason") or "").strip()[:500] or None
        try:
            async with self.store.as_member(request.state.member) as db:
                row = await db.one("console_request_cancel", {"run_id": run_id, "reason": reason})
        except psycopg.Error as exc:
            return self._refused(request, exc)
        answer = row[0] if row else {}
        if not answer.get("ok"):
            return self.error(request, 409, f"cannot cancel: {answer.get('error')}")
        return RedirectResponse(f"/runs/{run_id}", status_code=303)

    async def _act(self, request: Request, name: str, params: dict[str, Any]) -> Response:
        try:
            async with self.store.as_member(request.state.member) as db:
                row = await db.one(name, params)
        except psycopg.Error as exc:
            return self._refused(request, exc)
        return RedirectResponse(f"/runs/{row[0] if row else ''}", status_code=303)

    def _refused(self, request: Request, exc: psycopg.Error) -> Response:
        message = (exc.diag.message_primary or type(exc).__name__) if exc.diag else str(exc)
        if isinstance(exc, pg_errors.InsufficientPrivilege):
            return self.error(request, 403, f"refused by the database: {message}")
        if isinstance(exc, pg_errors.NoDataFound | pg_errors.InvalidTextRepresentation):
            return self.error(request, 404, message)
        if isinstance(exc, psycopg.errors.DataError | pg_errors.ObjectNotInPrerequisiteState):
            return self.error(request, 409, message)
        raise exc

    # -- the application --------------------------------------------------------------------

    def application(self) -> Starlette:
        @asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            await self.store.open()
            try:
                yield
            finally:
                await self.store.close()

        routes = [
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/", self.fleet, methods=["GET"]),
            Route("/projects/{slug}", self.project, methods=["GET"]),
            Route("/runs/{run_id}", self.run, methods=["GET"]),
            Route("/runs/{run_id}/logs", self.log_stream, methods=["GET"]),
            Route("/runs/{run_id}/artifacts/{artifact_id}", self.artifact, methods=["GET"]),
            Route("/runs/{run_id}/cancel", self.cancel_run, methods=["POST"]),
            Route("/runs/{run_id}/retry", self.retry_run, methods=["POST"]),
            Route("/workflows/{workflow_id}/runs", self.start_run, methods=["POST"]),
            Route("/history", self.history, methods=["GET"]),
            Mount("/static", StaticFiles(packages=[("reconciler.console", "static")])),
        ]

        async def not_found(request: Request, exc: Exception) -> Response:
            return self.error(request, 404, str(exc))

        async def unavailable(request: Request, exc: Exception) -> Response:
            return self.error(request, 503, "the database is unavailable; try again shortly")

        async def unknown_user(request: Request, exc: Exception) -> Response:
            request.state.member = None
            response = (
                RedirectResponse("/login", status_code=303)
                if request.method in ("GET", "HEAD")
                else self.error(request, 401, UNKNOWN_USER)
            )
            self.clear_session(response)
            return response

        async def failed(request: Request, exc: Exception) -> Response:
            """Anything unforeseen: a page that says so, never a traceback or a setting (the
            server's log has the details); outside the guard, so the headers are set here."""
            request.state.member = None
            response = self.error(request, 500, "something went wrong on our side; try again")
            response.headers.update(SECURITY_HEADERS)
            return response

        return Starlette(
            routes=routes,
            lifespan=lifespan,
            middleware=[Middleware(BaseHTTPMiddleware, dispatch=self.guard)],
            exception_handlers={
                NotFound: not_found,
                UnknownUser: unknown_user,
                Exception: failed,
                psycopg.OperationalError: unavailable,
                PoolTimeout: unavailable,
            },
        )

    async def guard(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Sign-in, CSRF and origin checks before any route; security headers after."""
        response = await self._guarded(request, call_next)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if self.settings.secure_cookies:
            response.headers.setdefault("strict-transport-security", "max-age=31536000")
        return response

    async def _guarded(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request.state.member = None
        unsafe = request.method not in ("GET", "HEAD")
        refused = await self._malformed(request, unsafe)
        if refused is not None:
            return refused
        public = any(request.url.path.startswith(prefix) for prefix in PUBLIC)
        member = self._member(request)
        if member is None and not public:
            if unsafe:
                return self.error(request, 401, "sign in first")
            return RedirectResponse("/login", status_code=303)
        request.state.member = member
        if unsafe and member is not None and request.url.path != "/login":
            form = await request.form()
            if not csrf_ok(self.csrf_key, member, str(form.get("csrf") or "")):
                return self.error(request, 403, "the form has expired or is forged; reload")
        return await call_next(request)

    async def _malformed(self, request: Request, unsafe: bool) -> Response | None:
        """What no route is shown: a cross-site form, an oversized one, a NUL anywhere."""
        if unsafe and not _same_origin(request, self.settings.secure_cookies):
            return self.error(request, 403, "cross-site request refused")
        if unsafe and not _small_form(request):
            return self.error(request, 413, f"a form is at most {MAX_FORM_BYTES} bytes")
        if not await _plain_input(request, unsafe):
            return self.error(request, 400, "a NUL character in the address or the form")
        return None

    def _member(self, request: Request) -> Member | None:
        token = request.cookies.get(self.cookie)
        if not token:
            return None
        try:
            return self.settings.verifier.verify(token)
        except InvalidToken:
            return None


def stored_file(artifacts_dir: Path, artifact_url: str) -> Path | None:
    """The artifact's file when it is a regular file inside the artifacts directory, symlinks
    resolved; None for any other URL or place (a row cannot point the console elsewhere)."""
    parsed = urlparse(artifact_url)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    root = artifacts_dir.resolve()
    try:
        path = Path(unquote(parsed.path)).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return None
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


async def _plain_input(request: Request, unsafe: bool) -> bool:
    """No NUL in anything a request hands the database (PostgreSQL text cannot hold one): the
    path, the query, and a form's fields, refused here once for every route."""
    texts = [request.url.path, *request.query_params.values()]
    if unsafe:
        await request.body()  # cached: the route reads the same form again (see _guarded)
        form = await request.form()
        texts += [value for value in form.values() if isinstance(value, str)]
    return not any("\x00" in text for text in texts)


def _small_form(request: Request) -> bool:
    """Forms are read whole: only with a declared length, and a small one."""
    length = request.headers.get("content-length", "")
    return length.isdigit() and int(length) <= MAX_FORM_BYTES


def _same_origin(request: Request, secure: bool) -> bool:
    """A state-changing request must come from the console's own pages: browsers say where a
    request comes from (Sec-Fetch-Site, else Origin); a cross-site form or fetch is refused
    even before its CSRF token is looked at. Behind a TLS-terminating proxy (--secure-cookies)
    the page's origin is https while the console itself is spoken to over http."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser's cross-site request (the CSRF token is still required)
    host = request.headers.get("host", "")
    schemes = {request.url.scheme, "https"} if secure else {request.url.scheme}
    return origin in {f"{scheme}://{host}" for scheme in schemes}


def _fleet_row(row: tuple[Any, ...]) -> dict[str, Any]:
    slug, name, version, status, drifted, last_runs = row
    return {
        "slug": slug,
        "name": name,
        "version": version,
        "status": status,
        "drifted": drifted,
        "last_runs": last_runs,
    }


def _log_line(line: tuple[Any, ...]) -> dict[str, str]:
    at, level, message = line
    return {"at": at.strftime("%H:%M:%S"), "level": level, "message": clean(message)}


def _sse(event: str, data: Any, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n"


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise NotFound("no such page") from None


def _timestamp(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _join(values: Any, separator: str = ", ") -> str:
    return separator.join(clean(str(value)) for value in values or ())


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _finalize(value: Any) -> Any:
    """Every value a template prints, before escaping: strings lose controls and ANSI."""
    if value is None:
        return ""
    if isinstance(value, str) and not isinstance(value, markupsafe.Markup):
        return clean(value)
    return value


def create_app(settings: Settings) -> Starlette:
    return Console(settings).application()


__all__ = ["Console", "Session", "Settings", "create_app", "stored_file"]
