"""What one file and one run may cost. A file past a limit is one problem (E106), never a
crash, hang or unbounded memory; docs/errors.md states these numbers to users.

The loader enforces them while composing (yamldoc.py), the state directory's reader while
reading (files.py, gitrepo.py), before anything is built from the file."""

from __future__ import annotations

MAX_FILE_BYTES = 4 * 1024 * 1024  # one file; a fleet's largest project file is ~5 KiB
MAX_RUN_BYTES = 1024 * 1024 * 1024  # all the files of one run together
MAX_DEPTH = 64  # nested mappings and lists
MAX_NODES = 250_000  # values of one file, each alias counting as the values it repeats
MAX_ALIASES = 10_000  # aliases (`*name`) in one file


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def too_large(size: int) -> str:
    return (
        f"the file is {_mib(size)}, more than the {_mib(MAX_FILE_BYTES)} one file may hold; "
        "split it"
    )


def run_too_large(size: int) -> str:
    return (
        f"the state files add up to {_mib(size)}, more than the {_mib(MAX_RUN_BYTES)} "
        "one run reads; this file is past that"
    )


def too_many_nodes() -> str:
    return (
        f"more than {MAX_NODES:,} values in one file (aliases count as the values they "
        "repeat); split the file or use fewer aliases"
    )


def too_many_aliases() -> str:
    return f"more than {MAX_ALIASES:,} aliases in one file"


def too_deep() -> str:
    return f"mappings and lists nested more than {MAX_DEPTH} deep"
