"""`reconcile validate`: the schema and cross-reference checks of the files, without a database."""

from __future__ import annotations

import json

from reconciler import files
from reconciler.commands.shared import Echo, InvalidFiles, Options, cache_dir
from reconciler.core import pipelines
from reconciler.core.desired import assemble, clean_across
from reconciler.core.plan import collect
from reconciler.core.problems import Problem
from reconciler.errors import ReconcilerError


def validate(options: Options, out: Echo) -> int:
    """Schema and cross-reference checks of the files alone."""
    with files.without_cyclic_gc():
        cache = cache_dir() if options.use_cache else None
        loaded = files.load(options.state_dir, cache, progress=options.progress)
        if not loaded.files:
            raise ReconcilerError(
                f"no state files (*.yaml, *.yml) in {options.state_dir}: give the state "
                "directory with -C DIR, or start one with `reconcile init`"
            )
        across, resources_count = across_files(loaded)
    found = collect(loaded.problems, across)
    if found and options.output == "json":
        out(json.dumps({"valid": False, "problems": [p.as_dict() for p in found]}, indent=2))
    if found:
        raise InvalidFiles(found, options.state_dir)
    _say_valid(options, out, len(loaded.files), resources_count)
    return 0


def across_files(loaded: files.LoadedFiles) -> tuple[list[Problem], int]:
    """The problems across files (a slot taken twice, an unknown project, the pipelines'
    rules) and how many resources there are. The pipelines' `needs` look across a project's
    workflows, which may stand in several files, and `paths` are refused on a project with a
    code repository of its own, which may stand in another file than its workflow. When no
    slot is taken twice and every project is there, only the projects where these rules can
    find something are assembled (a workflow needs another; a workflow has paths and the
    project its own code), and the other workflows' trigger rules come with their files.
    Otherwise every resource is assembled, as before: the same problems either way."""
    across = loaded.across()
    if clean_across(across.slots, across.projects, across.referenced):
        own = {slug for f in loaded.files.values() for slug, url in f.summary.code if url}
        groups = across.needs | (across.paths & own)
        desired, problems = assemble(loaded.resources(groups), known_projects=set())
        assembled = desired.resources.values()
        cached = [p for project, p in across.triggers if project not in groups]
        rules = [*pipelines.needs(desired), *pipelines.triggers(assembled, own), *cached]
        return [*problems, *rules], len(across.slots)
    resources = loaded.resources()
    desired, problems = assemble(resources, known_projects=set())
    return [*problems, *pipelines.check(desired)], len(resources)


def _say_valid(options: Options, out: Echo, files_count: int, resources_count: int) -> None:
    if options.output == "json":
        counts = {"files": files_count, "resources": resources_count}
        out(json.dumps({"valid": True, **counts, "problems": []}, indent=2))
    else:
        out(f"{files_count} file(s), {resources_count} resource(s): valid")
