"""Secrets for steps: a workflow lists the names it needs (`config.secrets`); the worker gives
each step only those, from the source its operator configured:

* `--secrets-file FILE`: `NAME=value` lines (the value is everything after the first `=`, as
  written; blank lines and `#` comments skipped), read once at start; the file should be
  readable by the worker's user only (it is also hidden from process steps);
* `--secrets-env-prefix PREFIX`: the worker's variables `PREFIX<NAME>`, read once at start and
  removed from the worker's own environment so that no child inherits them.

A name the source does not hold fails the run (`secret NAME is not configured on this worker`)
before any step starts. Values are masked (`***`) in every stored log line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.errors import ReconcilerError

NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


class SecretsError(ReconcilerError):
    """The secrets source cannot be read, or a run asks for a secret it does not hold."""


@dataclass(frozen=True)
class SecretStore:
    values: Mapping[str, str] = field(default_factory=dict)

    def for_run(self, names: Iterable[str]) -> dict[str, str]:
        chosen: dict[str, str] = {}
        for name in names:
            if not NAME.fullmatch(name):
                raise SecretsError(f"secret name {name!r} is not an environment variable name")
            if name not in self.values:
                raise SecretsError(f"secret {name} is not configured on this worker")
            chosen[name] = self.values[name]
        return chosen

    @property
    def all_values(self) -> list[str]:
        return list(self.values.values())


def from_file(path: Path) -> SecretStore:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise SecretsError(f"cannot read the secrets file {path}: {reason}") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, equals, value = line.lstrip().partition("=")  # the value exactly as written
        if not equals or not NAME.fullmatch(name.strip()):
            raise SecretsError(f"{path}:{number}: expected NAME=value (NAME in A-Z, 0-9, _)")
        values[name.strip()] = value
    return SecretStore(values)


def from_environment(prefix: str, environ: dict[str, str] | None = None) -> SecretStore:
    """The variables named PREFIX<NAME>, taken out of the environment."""
    source = os.environ if environ is None else environ
    values = {}
    for key in [k for k in source if k.startswith(prefix) and NAME.fullmatch(k[len(prefix) :])]:
        values[key[len(prefix) :]] = source.pop(key)
    return SecretStore(values)
