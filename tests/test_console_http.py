"""The web console over HTTP, per persona, in the style of the RLS matrix: each page and action
as owner, admin, developer, viewer, a member of another project only, and signed out.

The application runs in-process (Starlette's TestClient) against a real database; every request
is a transaction as `authenticated` with the persona's claims, so what each sees is what
row-level security and the action functions decide.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from reconciler.console.app import COOKIE, STREAMS_PER_MEMBER, Console, Settings, create_app
from reconciler.console.identity import Verifier, mint
from reconciler.console.text import clean
from tests.cli import reconcile
from tests.helpers import make_user, scalar

SECRET = b"console-test-secret-that-is-long-enough"
PERSONAS = ["owner", "admin", "developer", "viewer", "non-member", "signed-out"]
MEMBERS = {"owner", "admin", "developer", "viewer"}
OPERATORS = {"owner", "admin", "developer"}
HOSTILE_NAME = "<script>alert('name')</script> Evil & Co"
HOSTILE_LINE = "\x1b[31mred\x1b[0m <img src=x onerror=alert(1)> \x07bell \u202eevil"


@dataclass(frozen=True)
class World:
    users: dict[str, uuid.UUID]
    project: uuid.UUID
    workflow: uuid.UUID
    queued_run: uuid.UUID
    finished_run: uuid.UUID
    artifact: uuid.UUID
    outside_artifact: uuid.UUID
    linked_artifact: uuid.UUID
    artifacts_dir: Path


def build_world(conn: psycopg.Connection[Any], artifacts_dir: Path) -> World:
    users = {p: make_user(conn, f"{p}@example.com") for p in PERSONAS if p != "signed-out"}
    project = scalar(
        conn,
        "insert into ops.projects (workspace_key, slug, name, odoo_version) "
        "values ('project_p', 'project-p', %s, '17.0') returning id",
        (HOSTILE_NAME,),
    )
    other = scalar(
        conn,
        "insert into ops.projects (workspace_key, slug, name, odoo_version) "
        "values ('project_q', 'project-q', 'Project Q', '18.0') returning id",
    )
    for role in MEMBERS:
        conn.execute(
            "insert into ops.project_memberships (project_id, user_id, role) values (%s, %s, %s)",
            (project, users[role], role),
        )
    conn.execute(
        "insert into ops.project_memberships (project_id, user_id, role) values (%s, %s, 'owner')",
        (other, users["non-member"]),
    )
    workflow = scalar(
        conn,
        "insert into ops.workflows (project_id, workflow_type, name, git_ref) "
        "values (%s, 'build', 'build-main', 'main') returning id",
        (project,),
    )
    finished = _finished_run(conn, project, workflow)
    key = "project-p/1/report.txt"
    (artifacts_dir / "project-p" / "1").mkdir(parents=True)
    (artifacts_dir / key).write_text("the report\n")
    secret_file = artifacts_dir.parent / "outside.txt"
    secret_file.write_text("not an artifact\n")
    (artifacts_dir / "project-p" / "1" / "link.txt").symlink_to(secret_file)
    artifact = _artifact(conn, finished, key, (artifacts_dir / key).resolve().as_uri())
    outside = _artifact(conn, finished, "project-p/1/outside", secret_file.as_uri())
    linked = _artifact(
        conn, finished, "project-p/1/link.txt", (artifacts_dir / "project-p/1/link.txt").as_uri()
    )
    queued = _queued_run(conn, project, workflow)
    conn.execute(
        "insert into ops.reconcile_applies (git_commit, git_ref, summary, plan) values "
        "('abc1234', 'main', '{}', %s)",
        (
            '{"changes": [{"kind": "project", "key": "project-p", "action": "update", '
            '"fields": ["name"]}, {"kind": "project", "key": "project-q", "action": "update",'
            ' "fields": ["secret_q_field"]}], "runs": []}',
        ),
    )
    return World(
        users, project, workflow, queued, finished, artifact, outside, linked, artifacts_dir
    )


def _queued_run(conn: psycopg.Connection[Any], project: Any, workflow: Any) -> uuid.UUID:
    return scalar(  # type: ignore[no-any-return]
        conn,
        "insert into ops.runs (project_id, workflow_id) values (%s, %s) returning id",
        (project, workflow),
    )


def _finished_run(conn: psycopg.Connection[Any], project: Any, workflow: Any) -> uuid.UUID:
    """A run the way a worker makes one: claimed, started, logs, finished."""
    run = _queued_run(conn, project, workflow)
    conn.execute("select ops.claim_run('w', 60)")
    token = scalar(conn, "select lease_token from ops.runs where id = %s", (run,))
    conn.execute("select ops.start_run(%s, %s)", (run, token))
    conn.execute(
        "select ops.append_run_logs(%s, %s, %s::jsonb)",
        (run, token, _json_lines(["first line", HOSTILE_LINE])),
    )
    conn.execute("select ops.finish_run(%s, %s, 0, null)", (run, token))
    return run


def _json_lines(messages: list[str]) -> str:
    import json  # noqa: PLC0415

    return json.dumps([{"level": "info", "message": m} for m in messages])


def _artifact(conn: psycopg.Connection[Any], run: Any, key: str, url: str) -> uuid.UUID:
    return scalar(  # type: ignore[no-any-return]
        conn,
        "insert into ops.run_artifacts (run_id, artifact_key, artifact_url, size_bytes) "
        "values (%s, %s, %s, 11) returning id",
        (run, key, url),
    )


@pytest.fixture(scope="module")
def world(
    module_db_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, World]]:
    artifacts = tmp_path_factory.mktemp("console") / "artifacts"
    artifacts.mkdir()
    with psycopg.connect(module_db_url, autocommit=True) as conn:
        yield module_db_url, build_world(conn, artifacts)


@pytest.fixture(scope="module")
def client(world: tuple[str, World]) -> Iterator[TestClient]:
    url, built = world
    settings = Settings(url, Verifier(secret=SECRET), built.artifacts_dir)
    with TestClient(create_app(settings), follow_redirects=False) as test_client:
        yield test_client


def sign_in(client: TestClient, world: World, persona: str) -> None:
    client.cookies.clear()
    if persona != "signed-out":
        token = mint(SECRET, world.users[persona], f"{persona}@example.com", 600)
        client.cookies.set(COOKIE, token)


def csrf_of(client: TestClient, page: str = "/") -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', client.get(page).text)
    assert found, "a signed-in page carries the CSRF token"
    return found.group(1)


# -- pages: who sees project P's content ----------------------------------------------------

PAGES = {
    "fleet": lambda w: "/",
    "project": lambda w: "/projects/project-p",
    "run": lambda w: f"/runs/{w.finished_run}",
    "logs": lambda w: f"/runs/{w.finished_run}/logs",
    "artifact": lambda w: f"/runs/{w.finished_run}/artifacts/{w.artifact}",
    "history": lambda w: "/history",
}
# What proves the page shows P's data (escaped as it must be).
MARKERS = {
    "fleet": "project-p",
    "project": "build/build-main",
    "run": "first line",
    "logs": "first line",
    "artifact": "the report",
    "history": "project-p",
}


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("page", list(PAGES))
def test_page_per_persona(
    client: TestClient, world: tuple[str, World], page: str, persona: str
) -> None:
    _, built = world
    sign_in(client, built, persona)
    response = client.get(PAGES[page](built))
    if persona == "signed-out":
        assert response.status_code == 303 and response.headers["location"] == "/login"
        return
    sees = response.status_code == 200 and MARKERS[page] in response.text
    assert sees == (persona in MEMBERS), (page, persona, response.status_code)
    if persona == "non-member" and page not in ("fleet", "history"):
        assert response.status_code == 404  # the same answer as for an id that does not exist


def test_non_member_sees_their_own_project_and_nothing_of_p(
    client: TestClient, world: tuple[str, World]
) -> None:
    _, built = world
    sign_in(client, built, "non-member")
    fleet = client.get("/").text
    assert "project-q" in fleet and "project-p" not in fleet
    history = client.get("/history").text
    assert "secret_q_field" in history and "project-p" not in history
    stream = client.get(f"/runs/{built.finished_run}/logs")
    assert stream.status_code == 404 and "first line" not in stream.text


def test_a_member_of_p_does_not_see_q_in_the_history(
    client: TestClient, world: tuple[str, World]
) -> None:
    _, built = world
    sign_in(client, built, "viewer")
    history = client.get("/history").text
    assert "project-p" in history and "secret_q_field" not in history


def test_project_page_shows_members_and_advisories_for_its_version(
    client: TestClient, world: tuple[str, World]
) -> None:
    url, built = world
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "insert into ops.upgrade_advisories (advisory_key, from_version, to_version, "
            "severity, title, description) values "
            "('a-17-18', '17.0', '18.0', 'high', 'Seventeen to eighteen', 'd'), "
            "('a-15-16', '15.0', '16.0', 'low', 'Fifteen to sixteen', 'd') "
            "on conflict do nothing"
        )
    sign_in(client, built, "viewer")
    page = client.get("/projects/project-p").text
    assert all(f"{p}@example.com" in page for p in MEMBERS)
    assert "non-member@example.com" not in page
    assert "Seventeen to eighteen" in page and "Fifteen to sixteen" not in page


# -- what is offered: buttons per role --------------------------------------------------------


@pytest.mark.parametrize("persona", sorted(MEMBERS))
def test_actions_are_offered_only_to_operators(
    client: TestClient, world: tuple[str, World], persona: str
) -> None:
    _, built = world
    sign_in(client, built, persona)
    project = client.get("/projects/project-p").text
    queued = client.get(f"/runs/{built.queued_run}").text
    finished = client.get(f"/runs/{built.finished_run}").text
    offered = (
        f"/workflows/{built.workflow}/runs" in project,
        'id="cancel"' in queued,
        'id="retry"' in finished,
    )
    assert offered == ((persona in OPERATORS),) * 3


# -- actions: who can, through the database functions ---------------------------------------


def _count_runs(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(scalar(conn, "select count(*) from ops.runs"))


def _status(url: str, run: uuid.UUID) -> str:
    with psycopg.connect(url) as conn:
        return str(scalar(conn, "select status from ops.runs where id = %s", (run,)))


def _fresh_queued(url: str, built: World) -> uuid.UUID:
    with psycopg.connect(url, autocommit=True) as conn:
        return _queued_run(conn, built.project, built.workflow)


def _post(client: TestClient, path: str, data: dict[str, str], csrf: bool = True) -> Any:
    if csrf:
        data = {**data, "csrf": csrf_of(client)}
    return client.post(path, data=data)


@pytest.mark.parametrize("persona", PERSONAS)
def test_start_a_run_per_persona(
    client: TestClient, world: tuple[str, World], persona: str
) -> None:
    url, built = world
    sign_in(client, built, persona)
    before = _count_runs(url)
    response = _post(
        client, f"/workflows/{built.workflow}/runs", {"ref": "main"}, persona != "signed-out"
    )
    started = _count_runs(url) - before
    assert started == (1 if persona in OPERATORS else 0)
    if persona in OPERATORS:
        assert response.status_code == 303 and response.headers["location"].startswith("/runs/")
        new_run = client.get(response.headers["location"])
        assert "manual" in new_run.text and "queued" in new_run.text
    else:
        assert response.status_code == (401 if persona == "signed-out" else 403)


@pytest.mark.parametrize("persona", PERSONAS)
def test_retry_a_finished_run_per_persona(
    client: TestClient, world: tuple[str, World], persona: str
) -> None:
    url, built = world
    sign_in(client, built, persona)
    before = _count_runs(url)
    response = _post(client, f"/runs/{built.finished_run}/retry", {}, persona != "signed-out")
    assert _count_runs(url) - before == (1 if persona in OPERATORS else 0)
    if persona in OPERATORS:
        page = client.get(response.headers["location"]).text
        assert "retry" in page and f"/runs/{built.finished_run}" in page
    else:
        assert response.status_code == (401 if persona == "signed-out" else 403)


@pytest.mark.parametrize("persona", PERSONAS)
def test_cancel_a_queued_run_per_persona(
    client: TestClient, world: tuple[str, World], persona: str
) -> None:
    url, built = world
    run = _fresh_queued(url, built)
    sign_in(client, built, persona)
    response = _post(client, f"/runs/{run}/cancel", {"reason": "no"}, persona != "signed-out")
    assert _status(url, run) == ("canceled" if persona in OPERATORS else "queued")
    if persona not in OPERATORS:
        assert response.status_code == (401 if persona == "signed-out" else 403)


def test_a_viewer_forging_the_form_is_refused_by_the_database(
    client: TestClient, world: tuple[str, World]
) -> None:
    """The viewer has a valid session and CSRF token but no button: the function refuses."""
    url, built = world
    run = _fresh_queued(url, built)
    sign_in(client, built, "viewer")
    response = _post(client, f"/runs/{run}/cancel", {})
    assert response.status_code == 403 and "refused by the database" in response.text
    assert _status(url, run) == "queued"


@pytest.mark.parametrize(
    "headers, data",
    [
        ({}, {}),  # no CSRF token
        ({}, {"csrf": "0" * 64}),  # a made-up one
        ({"origin": "http://evil.example"}, None),  # a valid token, from another site
        ({"sec-fetch-site": "cross-site"}, None),
    ],
)
def test_forged_requests_are_refused(
    client: TestClient,
    world: tuple[str, World],
    headers: dict[str, str],
    data: dict[str, str] | None,
) -> None:
    url, built = world
    run = _fresh_queued(url, built)
    sign_in(client, built, "owner")
    form = data if data is not None else {"csrf": csrf_of(client)}
    response = client.post(f"/runs/{run}/cancel", data=form, headers=headers)
    assert response.status_code == 403
    assert _status(url, run) == "queued"


def test_retrying_a_queued_run_says_why_not(client: TestClient, world: tuple[str, World]) -> None:
    url, built = world
    run = _fresh_queued(url, built)
    sign_in(client, built, "owner")
    response = _post(client, f"/runs/{run}/retry", {})
    assert response.status_code == 409 and "only a finished run" in response.text


# -- identity ---------------------------------------------------------------------------------


def _token(world: World, **changes: Any) -> str:
    claims = {
        "sub": str(world.users["owner"]),
        "aud": "authenticated",
        "role": "authenticated",
        "exp": int(time.time()) + 600,
        **changes,
    }
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, SECRET, "HS256")


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(lambda w: _token(w, exp=int(time.time()) - 120), id="expired"),
        pytest.param(
            lambda w: jwt.encode(
                {
                    "sub": str(w.users["owner"]),
                    "aud": "authenticated",
                    "exp": int(time.time()) + 600,
                },
                b"x" * 40,
                "HS256",
            ),
            id="other-secret",
        ),
        pytest.param(lambda w: _token(w, role="service_role"), id="service-role"),
        pytest.param(lambda w: _token(w, aud="anon"), id="wrong-audience"),
        pytest.param(lambda w: _token(w, exp=None), id="no-expiry"),
        pytest.param(lambda w: _token(w, sub="not-a-uuid"), id="bad-subject"),
        pytest.param(
            lambda w: jwt.encode({"sub": str(w.users["owner"])}, None, "none"), id="alg-none"
        ),
        pytest.param(lambda w: "garbage", id="garbage"),
    ],
)
def test_bad_tokens_do_not_sign_in(
    client: TestClient, world: tuple[str, World], token: Any
) -> None:
    _, built = world
    client.cookies.clear()
    client.cookies.set(COOKIE, token(built))
    assert client.get("/").status_code == 303
    client.cookies.clear()
    refused = client.post("/login", data={"token": token(built)})
    assert refused.status_code == 401 and COOKIE not in refused.headers.get("set-cookie", "")


def test_sign_in_sets_a_strict_httponly_cookie_and_sign_out_clears_it(
    client: TestClient, world: tuple[str, World]
) -> None:
    _, built = world
    client.cookies.clear()
    assert "Access token" in client.get("/login").text
    response = client.post("/login", data={"token": _token(built)})
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert client.get("/").status_code == 200
    signed_out = _post(client, "/logout", {})
    assert signed_out.status_code == 303
    assert "max-age=0" in signed_out.headers["set-cookie"].lower()


def test_every_response_carries_the_security_headers(
    client: TestClient, world: tuple[str, World]
) -> None:
    _, built = world
    sign_in(client, built, "owner")
    for path in ("/", "/login", "/projects/project-p", "/projects/nope"):
        headers = client.get(path).headers
        assert "script-src 'self'" in headers["content-security-policy"], path
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["cache-control"] == "no-store", path


# -- hostile data -----------------------------------------------------------------------------


def test_hostile_names_and_log_lines_are_shown_as_text(
    client: TestClient, world: tuple[str, World]
) -> None:
    _, built = world
    sign_in(client, built, "viewer")
    for path in ("/", "/projects/project-p"):
        page = client.get(path).text
        assert "<script>alert" not in page
        assert "&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt; Evil &amp; Co" in page
    run = client.get(f"/runs/{built.finished_run}").text
    assert "<img src=x" not in run and "&lt;img src=x onerror=alert(1)&gt;" in run
    assert "\x1b" not in run and "\x07" not in run and "\u202e" not in run
    stream = client.get(f"/runs/{built.finished_run}/logs").text
    assert "\\u001b" not in stream and "<img src=x onerror=alert(1)>" in stream  # JSON text


def test_clean_removes_terminal_escapes_and_controls() -> None:
    assert clean("\x1b[1;32mok\x1b[0m") == "ok"
    assert clean("\x1b]0;title\x07after") == "after"
    assert clean("nul\x00here") == "nul\ufffdhere"
    assert clean("tab\tand\nnewline") == "tab\tand\nnewline"
    assert clean("x" * 20, limit=5) == "xxxxx … (15 more characters)"


# -- artifacts --------------------------------------------------------------------------------


def test_an_artifact_downloads_as_an_attachment(
    client: TestClient, world: tuple[str, World]
) -> None:
    _, built = world
    sign_in(client, built, "viewer")
    response = client.get(f"/runs/{built.finished_run}/artifacts/{built.artifact}")
    assert response.status_code == 200 and response.text == "the report\n"
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"].startswith("attachment")
    assert response.headers["content-security-policy"] == "sandbox"


@pytest.mark.parametrize("which", ["outside_artifact", "linked_artifact"])
def test_artifacts_outside_the_artifacts_dir_are_not_served(
    client: TestClient, world: tuple[str, World], which: str
) -> None:
    """A row pointing elsewhere (or a symlink out of the directory) serves nothing."""
    _, built = world
    sign_in(client, built, "owner")
    response = client.get(f"/runs/{built.finished_run}/artifacts/{getattr(built, which)}")
    assert response.status_code == 404 and "not an artifact" not in response.text


def test_an_artifact_of_another_run_is_not_served_by_this_runs_url(
    client: TestClient, world: tuple[str, World]
) -> None:
    _, built = world
    sign_in(client, built, "owner")
    response = client.get(f"/runs/{built.queued_run}/artifacts/{built.artifact}")
    assert response.status_code == 404


# -- the fleet's search and pages -------------------------------------------------------------


def test_fleet_search_and_keyset_pages(client: TestClient, world: tuple[str, World]) -> None:
    url, built = world
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "with p as (insert into ops.projects (workspace_key, slug, name, odoo_version) "
            "select 'bulk_' || n, 'bulk-' || lpad(n::text, 3, '0'), 'Bulk ' || n, '18.0' "
            "from generate_series(1, 120) n returning id) "
            "insert into ops.project_memberships (project_id, user_id, role) "
            "select id, %s, 'viewer' from p",
            (built.users["admin"],),
        )
    sign_in(client, built, "admin")
    seen: list[str] = []
    page = client.get("/").text
    while True:
        seen += re.findall(r'href="/projects/([a-z0-9-]+)"', page)
        following = re.search(r'rel="next" href="([^"]+)"', page)
        if not following:
            break
        page = client.get(following.group(1).replace("&amp;", "&")).text
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 121
    back = re.search(r'rel="prev" href="([^"]+)"', page)
    assert back is not None
    previous = re.findall(r'href="/projects/([a-z0-9-]+)"', client.get(back.group(1)).text)
    assert previous == seen[50:100]
    found = re.findall(r'href="/projects/([a-z0-9-]+)"', client.get("/?q=bulk-11").text)
    assert found == [f"bulk-11{n}" for n in range(10)]
    assert "No project" in client.get("/?q=%25").text  # a wildcard is searched for literally


# -- Supabase's asymmetric keys (JWKS) ----------------------------------------------------------


@pytest.fixture(scope="module")
def jwks() -> Iterator[tuple[str, Any]]:
    """A JWKS endpoint on a local port, serving one RSA public key (as Supabase publishes)."""
    import http.server  # noqa: PLC0415
    import json  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [{**public, "kid": "k1", "alg": "RS256", "use": "sig"}]}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json", key
    server.shutdown()
    server.server_close()


def test_tokens_signed_by_the_jwks_keys_sign_in(
    world: tuple[str, World], jwks: tuple[str, Any]
) -> None:
    url, built = world
    jwks_url, key = jwks
    claims = {
        "sub": str(built.users["viewer"]),
        "aud": "authenticated",
        "role": "authenticated",
        "email": "viewer@example.com",
        "exp": int(time.time()) + 600,
    }
    signed = jwt.encode(claims, key, "RS256", headers={"kid": "k1"})
    settings = Settings(url, Verifier(secret=SECRET, jwks_url=jwks_url), built.artifacts_dir)
    with TestClient(create_app(settings), follow_redirects=False) as jwks_client:
        jwks_client.cookies.set(COOKIE, signed)
        assert "project-p" in jwks_client.get("/").text
        jwks_client.cookies.set(COOKIE, jwt.encode({**claims, "exp": 1}, key, "RS256"))
        assert jwks_client.get("/").status_code == 303
    secret_only = Settings(url, Verifier(secret=SECRET), built.artifacts_dir)
    with TestClient(create_app(secret_only), follow_redirects=False) as plain_client:
        plain_client.cookies.set(COOKIE, signed)
        assert plain_client.get("/").status_code == 303  # no JWKS configured: not accepted


def _hmac_forged(claims: dict[str, Any], secret: bytes, alg: str, kid: str) -> str:
    """A token signed with HMAC under any bytes (PyJWT refuses a PEM as an HMAC key itself)."""
    import base64  # noqa: PLC0415
    import hashlib  # noqa: PLC0415
    import hmac  # noqa: PLC0415
    import json  # noqa: PLC0415

    def part(value: Any) -> str:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = f"{part({'alg': alg, 'typ': 'JWT', 'kid': kid})}.{part(claims)}"
    return f"{head}.{part(hmac.new(secret, head.encode(), hashlib.sha256).digest())}"


def test_the_jwks_public_key_does_not_sign_as_an_hmac_secret(
    world: tuple[str, World], jwks: tuple[str, Any]
) -> None:
    """HS/RS confusion: anyone can fetch the public key; an HS256 token signed with it (as PEM,
    or with the JWK's modulus), or one claiming RS256 with an HMAC signature, is no session."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    url, built = world
    jwks_url, key = jwks
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {
        "sub": str(built.users["owner"]),
        "aud": "authenticated",
        "exp": int(time.time()) + 600,
    }
    forged = [
        _hmac_forged(claims, pem, "HS256", "k1"),
        _hmac_forged(claims, pem, "RS256", "k1"),
        _hmac_forged(claims, b"", "HS256", "k1"),
        jwt.encode(claims, key, "RS256", headers={"kid": "unknown"}),
    ]
    settings = Settings(url, Verifier(secret=SECRET, jwks_url=jwks_url), built.artifacts_dir)
    with TestClient(create_app(settings), follow_redirects=False) as jwks_client:
        for token in forged:
            jwks_client.cookies.set(COOKIE, token)
            assert jwks_client.get("/").status_code == 303
            jwks_client.cookies.clear()
            assert jwks_client.post("/login", data={"token": token}).status_code == 401


# -- `reconcile console token` ------------------------------------------------------------------


def test_console_token_mints_a_token_the_console_accepts(world: tuple[str, World]) -> None:
    url, built = world
    env = {"DATABASE_URL": url, "RECONCILE_CONSOLE_JWT_SECRET": SECRET.decode()}
    minted = reconcile("console", "token", "--email", "Viewer@Example.com", "--ttl", "120", env=env)
    assert minted.code == 0, minted.stderr
    member = Verifier(secret=SECRET).verify(minted.stdout.strip())
    assert member.user_id == built.users["viewer"]
    assert 100 <= member.expires_at - time.time() <= 121


@pytest.mark.parametrize(
    "args, message",
    [
        (["--email", "nobody@example.com"], "no user 'nobody@example.com' in auth.users"),
        (["--email", "viewer@example.com", "--ttl", "5"], "--ttl must be between 60 and"),
    ],
)
def test_console_token_refuses_with_one_line(
    world: tuple[str, World], args: list[str], message: str
) -> None:
    url, _ = world
    env = {"DATABASE_URL": url, "RECONCILE_CONSOLE_JWT_SECRET": SECRET.decode()}
    refused = reconcile("console", "token", *args, env=env)
    assert refused.code == 1 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and message in refused.stderr


def test_an_oversized_form_is_refused_before_it_is_read(client: TestClient) -> None:
    client.cookies.clear()
    response = client.post("/login", data={"token": "x" * 70_000})
    assert response.status_code == 413


def test_requests_run_as_the_authenticated_role_and_sign_out_needs_no_session(
    client: TestClient, world: tuple[str, World]
) -> None:
    """The member's transaction: role `authenticated`, their sub; nothing survives it."""
    import asyncio  # noqa: PLC0415

    from reconciler.console.identity import Member  # noqa: PLC0415
    from reconciler.console.store import Store  # noqa: PLC0415

    url, built = world

    async def check() -> None:
        store = Store(url, max_size=1)
        await store.open()
        member = Member(built.users["viewer"], "v", {"sub": str(built.users["viewer"])}, "t")
        async with store.as_member(member) as db:
            cursor = await db.conn.execute("select current_user, ops.current_user_id()")
            assert await cursor.fetchone() == ("authenticated", built.users["viewer"])
        async with store.pool.connection() as conn:
            cursor = await conn.execute("select current_user <> 'authenticated'")
            assert await cursor.fetchone() == (True,)
        await store.close()

    asyncio.run(check())
    client.cookies.clear()
    response = client.post("/logout")
    assert response.status_code == 303 and response.headers["location"] == "/login"


def test_no_page_tells_a_member_where_the_database_is(
    world: tuple[str, World], tmp_path: Path
) -> None:
    """Members are not trusted: the database's user, host and name are the operator's (printed
    when `reconcile console` starts), not shown on any page, error pages included."""
    import os  # noqa: PLC0415
    import socket  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    url, built = world
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": url, "RECONCILE_CONSOLE_JWT_SECRET": SECRET.decode(),
           "RECONCILE_STATE_DIR": str(tmp_path / "state")}  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "console", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    cookie = f"{COOKIE}={mint(SECRET, built.users['owner'], 'owner@example.com', 600)}"

    def fetch(path: str) -> str:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
        request.add_header("cookie", cookie)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                return str(answer.read().decode())
        except urllib.error.HTTPError as refused:
            return str(refused.read().decode())

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert "project-p" in fetch("/")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "no console"
                time.sleep(0.2)
        dbname = url.split("dbname=")[1].split()[0]
        for path in ("/", "/projects/project-p", f"/runs/{built.finished_run}", "/history",
                     "/projects/nope", "/?q=%00"):  # fmt: skip
            page = fetch(path)
            assert dbname not in page and "127.0.0.1" not in page and "postgres@" not in page
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_sign_in_page_tells_a_stranger_nothing_about_the_database(
    client: TestClient,
) -> None:
    client.cookies.clear()
    page = client.get("/login").text
    assert "127.0.0.1" not in page and "dbname" not in page and "ops_test" not in page


# -- hostile input, sessions of users that do not exist, live-log streams -------------------


@pytest.mark.parametrize(
    "path",
    ["/?q=a%00b", "/?after=%00", "/?before=%00", "/projects/p%00", "/history?before=%00"],
)
def test_a_nul_in_the_address_is_a_bad_request_not_a_crash(
    client: TestClient, world: tuple[str, World], path: str
) -> None:
    """PostgreSQL text cannot hold NUL: every route refuses it with a page, never a 500."""
    _, built = world
    sign_in(client, built, "owner")
    response = client.get(path)
    assert response.status_code == 400, response.text
    assert "NUL" in response.text and "Traceback" not in response.text
    assert response.headers["content-security-policy"].startswith("default-src 'none'")


def test_a_nul_in_a_form_field_is_refused_and_starts_nothing(
    client: TestClient, world: tuple[str, World]
) -> None:
    url, built = world
    sign_in(client, built, "owner")
    before = _count_runs(url)
    response = _post(client, f"/workflows/{built.workflow}/runs", {"ref": "ma\x00in"})
    assert response.status_code == 400 and _count_runs(url) == before


def test_the_cancel_reason_typed_in_the_form_reaches_the_database(
    client: TestClient, world: tuple[str, World]
) -> None:
    """The guard reads the form (CSRF) before the route does: the route must still see it."""
    url, built = world
    run = _fresh_queued(url, built)
    sign_in(client, built, "owner")
    response = _post(client, f"/runs/{run}/cancel", {"reason": "wrong branch"})
    assert response.status_code == 303, response.text
    with psycopg.connect(url) as conn:
        messages = [r[0] for r in conn.execute(
            "select message from ops.run_events where run_id = %s", (run,)
        )]  # fmt: skip
    assert any(m.endswith(": wrong branch") for m in messages), messages


def _signed(sub: uuid.UUID) -> str:
    claims = {"sub": str(sub), "aud": "authenticated", "exp": int(time.time()) + 600}
    return jwt.encode(claims, SECRET, "HS256")


def test_a_valid_token_of_no_user_opens_nothing(client: TestClient) -> None:
    """Signed with the right secret, but its subject was never a user: no session at all."""
    ghost = _signed(uuid.uuid4())
    client.cookies.clear()
    refused = client.post("/login", data={"token": ghost})
    assert refused.status_code == 401 and COOKIE not in refused.headers.get("set-cookie", "")
    client.cookies.set(COOKIE, ghost)
    page = client.get("/")
    assert page.status_code == 303 and page.headers["location"] == "/login"
    assert f'{COOKIE}=""' in page.headers["set-cookie"]  # the cookie is cleared


def test_a_deleted_users_session_ends_at_once(client: TestClient, world: tuple[str, World]) -> None:
    url, built = world
    with psycopg.connect(url, autocommit=True) as conn:
        doomed = make_user(conn, "doomed@example.com")
        conn.execute(
            "insert into ops.project_memberships (project_id, user_id, role) "
            "values (%s, %s, 'owner')",
            (built.project, doomed),
        )
        client.cookies.clear()
        client.cookies.set(COOKIE, _signed(doomed))
        assert client.get("/projects/project-p").status_code == 200
        csrf = csrf_of(client, "/projects/project-p")
        conn.execute("delete from auth.users where id = %s", (doomed,))
    assert client.get("/projects/project-p").status_code == 303
    client.cookies.set(COOKIE, _signed(doomed))
    before = _count_runs(url)
    started = client.post(f"/workflows/{built.workflow}/runs", data={"csrf": csrf})
    assert started.status_code == 401 and _count_runs(url) == before
    assert client.get(f"/runs/{built.finished_run}/logs").status_code == 303


@pytest.mark.parametrize("persona", ["non-member", "signed-out"])
def test_the_live_log_of_a_run_one_cannot_see_is_not_found(
    client: TestClient, world: tuple[str, World], persona: str
) -> None:
    _, built = world
    sign_in(client, built, persona)
    response = client.get(f"/runs/{built.queued_run}/logs")
    assert response.status_code == (303 if persona == "signed-out" else 404)
    assert "text/event-stream" not in response.headers.get("content-type", "")


def test_one_member_holds_a_bounded_number_of_live_logs(world: tuple[str, World]) -> None:
    """Streams are counted per person: past the limit a new one is refused (429) instead of
    adding another poller to the pool everyone's pages share; a closed stream frees its place."""
    url, built = world
    console = Console(Settings(url, Verifier(secret=SECRET), built.artifacts_dir))
    with TestClient(console.application(), follow_redirects=False) as own:
        sign_in(own, built, "owner")
        path = f"/runs/{built.queued_run}/logs"
        console.streams[built.users["owner"]] = STREAMS_PER_MEMBER
        refused = own.get(path)
        assert refused.status_code == 429 and "at most" in refused.text
        sign_in(own, built, "admin")  # another person's streams are theirs
        assert own.get(f"/runs/{built.finished_run}/logs").status_code == 200
        sign_in(own, built, "owner")
        console.streams[built.users["owner"]] = STREAMS_PER_MEMBER - 1
        finished = own.get(f"/runs/{built.finished_run}/logs")  # ends: the run is over
        assert finished.status_code == 200 and "first line" in finished.text
        assert console.streams[built.users["owner"]] == STREAMS_PER_MEMBER - 1  # freed
        assert built.users["admin"] not in console.streams


def test_the_sign_in_page_sends_a_signed_in_member_to_the_fleet(
    client: TestClient, world: tuple[str, World]
) -> None:
    _, built = world
    sign_in(client, built, "viewer")
    response = client.get("/login")
    assert response.status_code == 303 and response.headers["location"] == "/"


def test_joined_lists_lose_controls_like_every_other_value(
    client: TestClient, world: tuple[str, World]
) -> None:
    url, built = world
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "insert into ops.upgrade_advisories (advisory_key, from_version, to_version, "
            "severity, title, description, affects_modules) values ('q13-bidi', '17.0', '18.0',"
            " 'low', 't', 'd', %s)",
            (["sale\u202eevil", "<b>stock</b>"],),
        )
    sign_in(client, built, "viewer")
    page = client.get("/projects/project-p").text
    assert "\u202e" not in page and "<b>stock" not in page and "&lt;b&gt;stock" in page


def test_an_unforeseen_error_is_a_page_without_details(world: tuple[str, World]) -> None:
    """Whatever breaks, the answer is the console's 500 page with its headers: no traceback, no
    database URL, no exception text."""
    url, built = world
    app = Console(Settings(url, Verifier(secret=SECRET), built.artifacts_dir)).application()

    async def broken(_request: Any) -> Any:
        raise RuntimeError(f"cannot reach {url} password=hunter2")

    app.router.routes.append(Route("/broken", broken))
    with TestClient(app, follow_redirects=False, raise_server_exceptions=False) as own:
        sign_in(own, built, "viewer")
        response = own.get("/broken")
    assert response.status_code == 500
    assert "hunter2" not in response.text and "Traceback" not in response.text
    assert "dbname" not in response.text and "RuntimeError" not in response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"


def test_behind_https_the_session_cookie_cannot_be_planted_by_a_sibling_host(
    world: tuple[str, World],
) -> None:
    """With --secure-cookies the cookie is `__Host-` (Secure, host-only, Path=/): a subdomain
    cannot set it, so a session cannot be fixated; the plain name is not read at all."""
    url, built = world
    settings = Settings(url, Verifier(secret=SECRET), built.artifacts_dir, secure_cookies=True)
    token = mint(SECRET, built.users["owner"], "owner@example.com", 600)
    with TestClient(
        create_app(settings), base_url="https://testserver", follow_redirects=False
    ) as own:
        signed = own.post("/login", data={"token": token})
        cookie = signed.headers["set-cookie"]
        assert cookie.startswith(f"__Host-{COOKIE}=") and "Secure" in cookie
        assert "Path=/" in cookie and "Domain" not in cookie
        assert "strict-transport-security" in signed.headers
        own.cookies.clear()
        own.cookies.set(COOKIE, token)  # what a sibling host could have planted
        assert own.get("/").status_code == 303
        own.cookies.clear()
        own.cookies.set(f"__Host-{COOKIE}", token)
        assert own.get("/").status_code == 200


def test_a_finished_runs_long_log_is_shown_in_pages_not_cut(
    client: TestClient, world: tuple[str, World]
) -> None:
    """A run page shows 2,000 lines at a time: past that, a link to the next ones (a finished run
    has no live stream to bring them), so no line of a long log is out of reach."""
    url, built = world
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "insert into ops.run_logs (run_id, log_level, message, timestamp) "
            "select %s, 'info', 'bulk-' || g, clock_timestamp() + g * interval '1 ms' "
            "from generate_series(1, 2100) g",
            (built.finished_run,),
        )
    sign_in(client, built, "viewer")
    seen: list[str] = []
    page = client.get(f"/runs/{built.finished_run}").text
    for _ in range(5):
        seen += re.findall(r"info (bulk-\d+|first line)\n", page)
        found = re.search(r'id="more-logs" href="([^"]+)"', page)
        if not found:
            break
        page = client.get(found.group(1).replace("&amp;", "&")).text
    assert seen[0] == "first line" and len(seen) == 2101
    assert seen[1:] == [f"bulk-{n}" for n in range(1, 2101)]


@pytest.mark.parametrize(
    ("headers", "accepted"),
    [
        ({"sec-fetch-site": "same-origin", "origin": "https://testserver"}, True),
        ({"origin": "https://testserver"}, True),  # a browser without Sec-Fetch-*
        ({"origin": "https://evil.example"}, False),
        ({"sec-fetch-site": "cross-site", "origin": "https://testserver"}, False),
        ({"sec-fetch-site": "same-site", "origin": "https://app.testserver"}, False),
    ],
)
def test_behind_a_tls_proxy_the_consoles_own_forms_work_and_others_do_not(
    world: tuple[str, World], headers: dict[str, str], accepted: bool
) -> None:
    """--secure-cookies: browsers see https://HOST, the console is spoken to over http by the
    proxy. Its own pages' forms must pass the origin check; other sites' must not."""
    url, built = world
    settings = Settings(url, Verifier(secret=SECRET), built.artifacts_dir, secure_cookies=True)
    run = _fresh_queued(url, built)
    with TestClient(create_app(settings), follow_redirects=False) as own:
        own.cookies.set(
            f"__Host-{COOKIE}", mint(SECRET, built.users["owner"], "owner@example.com", 600)
        )
        csrf = csrf_of(own)
        response = own.post(f"/runs/{run}/cancel", data={"csrf": csrf}, headers=headers)
    assert (response.status_code == 303) == accepted, response.text
    assert _status(url, run) == ("canceled" if accepted else "queued")


def test_a_port_in_use_is_one_line_and_exit_1(world: tuple[str, World], tmp_path: Path) -> None:
    import socket  # noqa: PLC0415

    url, _ = world
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"DATABASE_URL": url, "RECONCILE_STATE_DIR": str(tmp_path / "state")}
        refused = reconcile("console", "--port", str(port), env=env)
    assert refused.code == 1 and refused.stdout == ""
    assert refused.stderr == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(choose another --port, or a --host of this machine)\n"
    )


@pytest.mark.parametrize("command", [["console", "token", "--email", "owner@example.com"],
                                     ["console", "--port", "1"]])  # fmt: skip
def test_a_guessable_secret_is_refused_before_anything_is_signed_or_served(
    world: tuple[str, World], tmp_path: Path, command: list[str]
) -> None:
    """HS256 under a short secret can be found offline from any one token it signed."""
    url, _ = world
    env = {
        "DATABASE_URL": url,
        "RECONCILE_CONSOLE_JWT_SECRET": "hunter2",
        "RECONCILE_STATE_DIR": str(tmp_path / "state"),
    }
    refused = reconcile(*command, env=env)
    assert refused.code == 1 and refused.stdout == "" and refused.stderr.count("\n") == 1
    assert "needs at least 32" in refused.stderr and "hunter2" not in refused.stderr


def test_a_head_request_for_a_live_log_holds_no_stream(
    client: TestClient, world: tuple[str, World]
) -> None:
    """HEAD gets the headers only: a stream started for it would poll the database for an hour
    for nobody (the run is queued: its stream would never end by itself)."""
    import threading  # noqa: PLC0415

    _, built = world
    sign_in(client, built, "owner")
    answers: list[Any] = []

    def heads() -> None:
        for _ in range(STREAMS_PER_MEMBER + 2):
            answers.append(client.head(f"/runs/{built.queued_run}/logs"))

    asking = threading.Thread(target=heads, daemon=True)  # a held stream would never return
    asking.start()
    asking.join(timeout=30)
    assert not asking.is_alive(), "a HEAD request is still streaming"
    assert all(a.status_code == 200 and a.content == b"" for a in answers)
    assert client.get(f"/runs/{built.finished_run}/logs").status_code == 200


def test_a_not_found_page_does_not_echo_the_address(
    client: TestClient, world: tuple[str, World]
) -> None:
    """A link's author cannot put their words on the console's own page (phishing text)."""
    _, built = world
    sign_in(client, built, "viewer")
    page = client.get("/projects/Your%20session%20expired%3A%20sign%20in%20at%20evil.example")
    assert page.status_code == 404 and "evil.example" not in page.text
