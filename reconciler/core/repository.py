"""Code repository URLs, commits and branch names: what may be handed to git, and what may be
shown or stored (never a credential). Pure: the rules the files, the plan and the checkout
share."""

from __future__ import annotations

import re

ALLOWED_TRANSPORTS = ("file", "https", "ssh", "git")
_SCHEME_ALIASES = {"git+ssh": "ssh", "ssh+git": "ssh"}
SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
_URL = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*)://([^/?#]*)(.*)", re.DOTALL)
_SCP = re.compile(r"(?:[^@/:]+@)?([^/:]+):")  # [user@]host:path, git's scp-like ssh syntax
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)([^/@\s]+)@")
_BAD_REF = re.compile(r"^-|\.\.|@\{|//|[\x00-\x20\x7f~^:?*\[\\]|^/|/$|\.lock$|\.$")


def refusal(repository: str) -> str | None:
    """Why `repository` is not a URL a run may check out from, or None: options, remote
    helpers (`ext::`), transports other than ALLOWED_TRANSPORTS, relative paths."""
    if not repository or repository.startswith("-"):
        return "it is empty or starts with '-'"
    if CONTROL.search(repository):
        return "it contains control characters"
    if "::" in repository.split("/", 1)[0]:
        return "remote helpers (`transport::address`, e.g. ext::) are not allowed"
    if url := _URL.fullmatch(repository):
        return _url_refusal(url.group(1).lower(), url.group(2))
    local = repository.startswith("/")  # a local path: git's file transport
    scp = _SCP.match(repository)  # host:path over ssh
    if local or (scp and not scp.group(1).startswith("-")):
        return None
    return "use a URL (https://, ssh://, git://, file://), user@host:path, or an absolute path"


def _url_refusal(scheme: str, authority: str) -> str | None:
    transport = _SCHEME_ALIASES.get(scheme, scheme)
    if transport not in ALLOWED_TRANSPORTS:
        allowed = ", ".join(ALLOWED_TRANSPORTS)
        return f"transport {scheme!r} is not allowed (allowed: {allowed})"
    host = authority.rsplit("@", 1)[-1]
    if host.startswith("-"):
        return "its host starts with '-'"
    return None


def local_path(repository: str) -> str | None:
    """The folder a local repository (an absolute path or a file:// URL) names, or None."""
    if repository.startswith("/"):
        return repository
    if repository.lower().startswith("file://"):
        return "/" + repository[len("file://") :].split("/", 1)[-1]
    return None


def has_credentials(repository: str) -> bool:
    """A password, or an http(s) user (often a token), written in the URL."""
    return redact(repository) != repository


def redact(text: str) -> str:
    """`text` with the credentials of every URL in it hidden: a password always, and the
    user of http(s) URLs too (a token is often written as the user)."""
    return _USERINFO.sub(lambda m: _hidden(m, "***"), text)


def without_credentials(repository: str) -> str:
    """The URL a worker may be told: its credentials dropped (the worker has its own)."""
    return _USERINFO.sub(lambda m: _hidden(m, None), repository)


def _hidden(match: re.Match[str], mask: str | None) -> str:
    """A URL's userinfo masked (`mask`) or dropped (None): the password, and an http(s) user
    without a password (a token); an ssh user (`git@`) is no secret and is kept."""
    scheme, userinfo = match.group(1), match.group(2)
    user, password = userinfo.partition(":")[::2]
    http = scheme.lower().startswith("http")
    if mask is None:
        return scheme if http else f"{scheme}{user}@"
    if ":" in userinfo:
        return f"{scheme}{user}:{mask}@" if password or not http else f"{scheme}{mask}@"
    return f"{scheme}{mask}@" if http else match.group(0)


def ref_refusal(ref: str) -> str | None:
    """Why `ref` is not a branch or tag name git would accept (nor an option), or None."""
    if not ref or _BAD_REF.search(ref):
        return f"{ref!r} is not a valid branch or tag name"
    return None
