"""Who a request is: a signed JWT (Supabase's, or one `reconcile console token` minted), and the
CSRF token a form must carry for it.

The console trusts nothing else: no header, no cookie that is not a JWT verified here. The token
rides in an HttpOnly cookie; its claims are what row-level security sees.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from reconciler.errors import ReconcilerError

AUDIENCE = "authenticated"
MINTED_ISSUER = "ops-reconciler-console"
DEFAULT_TOKEN_TTL_S = 8 * 3600
MAX_TOKEN_TTL_S = 7 * 24 * 3600
LEEWAY_S = 30
MIN_SECRET_BYTES = 32
SECRET_FILE = "console-jwt-secret"  # noqa: S105  (a file name)
ASYMMETRIC = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "EdDSA"]


class InvalidToken(Exception):
    """The token is missing, malformed, expired, or not signed by a key the console trusts."""


@dataclass(frozen=True)
class Member:
    """A signed-in person: the JWT's subject and claims, as row-level security will see them."""

    user_id: uuid.UUID
    email: str
    claims: dict[str, Any]
    token: str

    @property
    def expires_at(self) -> int:
        return int(self.claims["exp"])


@dataclass
class Verifier:
    """Checks tokens: HS256 with a shared secret, and/or a JWKS URL for asymmetric keys."""

    secret: bytes | None = None
    jwks_url: str | None = None
    _jwks: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.secret and not self.jwks_url:
            raise ReconcilerError("the console needs a JWT secret or a JWKS URL to verify tokens")
        if self.jwks_url:
            self._jwks = jwt.PyJWKClient(self.jwks_url, cache_keys=True, lifespan=300, timeout=5)

    def verify(self, token: str) -> Member:
        try:
            claims = self._decode(token)
        except (jwt.PyJWTError, ValueError) as exc:
            raise InvalidToken(str(exc) or type(exc).__name__) from None
        return _member(claims, token)

    def _decode(self, token: str) -> dict[str, Any]:
        header = jwt.get_unverified_header(token)
        options: Any = {"require": ["exp", "sub"]}
        if header.get("alg") == "HS256" and self.secret:
            return jwt.decode(
                token,
                self.secret,
                algorithms=["HS256"],
                audience=AUDIENCE,
                leeway=LEEWAY_S,
                options=options,
            )
        if self._jwks is not None and header.get("alg") in ASYMMETRIC:
            key = self._jwks.get_signing_key_from_jwt(token)
            return jwt.decode(
                token,
                key,
                algorithms=ASYMMETRIC,
                audience=AUDIENCE,
                leeway=LEEWAY_S,
                options=options,
            )
        raise InvalidToken(f"tokens signed with {header.get('alg')!r} are not accepted here")


def _member(claims: dict[str, Any], token: str) -> Member:
    if claims.get("role", AUDIENCE) != AUDIENCE:
        raise InvalidToken("only tokens for the authenticated role sign in to the console")
    try:
        user_id = uuid.UUID(str(claims["sub"]))
    except ValueError:
        raise InvalidToken("the token's subject is not a user id") from None
    return Member(user_id, str(claims.get("email") or user_id), claims, token)


def mint(secret: bytes, user_id: uuid.UUID, email: str, ttl_s: int) -> str:
    """A short-lived token for a user, as Supabase would issue it (HS256, aud authenticated)."""
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "email": email,
        "role": AUDIENCE,
        "aud": AUDIENCE,
        "iss": MINTED_ISSUER,
        "iat": now,
        "exp": now + ttl_s,
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def csrf_token(key: bytes, member: Member) -> str:
    """Bound to the session's token: a form from another session (or site) does not verify."""
    return hmac.new(key, member.token.encode(), hashlib.sha256).hexdigest()


def csrf_ok(key: bytes, member: Member, presented: str) -> bool:
    return hmac.compare_digest(csrf_token(key, member), presented)


def console_secret(state_dir: Path) -> bytes:
    """The secret the console and `reconcile console token` share on plain PostgreSQL: made once,
    readable by its owner only (RECONCILE_CONSOLE_JWT_SECRET takes precedence)."""
    if env := os.environ.get("RECONCILE_CONSOLE_JWT_SECRET"):
        if len(env.encode()) < MIN_SECRET_BYTES:
            raise ReconcilerError(
                f"RECONCILE_CONSOLE_JWT_SECRET is {len(env.encode())} bytes; an HS256 secret "
                f"needs at least {MIN_SECRET_BYTES} (a shorter one can be guessed from any "
                "token it signed); use your Supabase JWT secret or a long random string"
            )
        return env.encode()
    path = state_dir / SECRET_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "w") as sink:
        sink.write(secrets.token_urlsafe(48))
    return path.read_bytes().strip()
