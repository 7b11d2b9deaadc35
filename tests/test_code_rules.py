"""The pure rules of code repositories: URLs without credentials, branch names, and how runs of
a project's own code repository are planned (keyed by the code's commit)."""

from __future__ import annotations

import pytest

from reconciler.core.desired import ANY_BRANCH
from reconciler.core.plan import Code, CodeHead, GitContext, plan_runs
from reconciler.core.repository import has_credentials, ref_refusal, without_credentials

STATE = GitContext("a" * 40, "main", clean=True, repository="/srv/state")
CODE_SHA = "c" * 40
SHOP = ("shop", "build", "build-main")
INFRA = ("infra", "build", "build")
CODE = Code(
    {"shop": "https://git.example.com/shop.git"},
    {("https://git.example.com/shop.git", "release"): CodeHead(CODE_SHA)},
)


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://ci:tok@github.com/a/b.git", "https://github.com/a/b.git"),
        ("https://tok@github.com/a/b.git", "https://github.com/a/b.git"),
        ("ssh://git:pw@host/a.git", "ssh://git@host/a.git"),
        ("ssh://git@host/a.git", "ssh://git@host/a.git"),
        ("git@github.com:a/b.git", "git@github.com:a/b.git"),
        ("/srv/git/a.git", "/srv/git/a.git"),
    ],
)
def test_without_credentials(url: str, kept: str) -> None:
    assert without_credentials(url) == kept
    assert has_credentials(url) is (url != kept)


@pytest.mark.parametrize("ref", ["main", "release/18.0", "v1.2.3", "feature/x-y_z"])
def test_branch_names_git_accepts(ref: str) -> None:
    assert ref_refusal(ref) is None


@pytest.mark.parametrize(
    "ref", ["-x", "--upload-pack=x", "a..b", "a b", "a:b", "a~1", "a^", "/a", "a/", "a.lock", ""]
)
def test_names_git_refuses(ref: str) -> None:
    assert ref_refusal(ref) is not None


def test_a_code_run_is_keyed_by_the_code_commit_whatever_the_state_branch() -> None:
    on_feature_branch = GitContext("a" * 40, "feature", clean=True, repository="/srv/state")
    [run] = plan_runs([(SHOP, "release", ())], on_feature_branch, set(), CODE)
    assert (run.action, run.idempotency_key) == (
        "enqueue",
        f"push:{CODE_SHA}:shop/build/build-main",
    )
    assert (run.commit, run.ref, run.repository) == (CODE_SHA, "release", CODE.repositories["shop"])
    assert run.own_repository


def test_a_code_run_already_enqueued_exists() -> None:
    [run] = plan_runs(
        [(SHOP, "release", ())], STATE, {f"push:{CODE_SHA}:shop/build/build-main"}, CODE
    )
    assert run.action == "exists"


def test_state_runs_keep_their_branch_rule_and_name_the_state_repository() -> None:
    runs = plan_runs([(INFRA, "main", ()), (INFRA, "other", ())], STATE, set(), CODE)
    assert [(r.action, r.commit, r.repository, r.own_repository) for r in runs] == [
        ("enqueue", "a" * 40, "/srv/state", False),
        ("skip", None, None, False),  # pushes to `other` run it: skipped, with the reason
    ]
    assert runs[1].reason == "runs on pushes to other, this is main"


@pytest.mark.parametrize(
    ("git", "head", "reason"),
    [
        (STATE, CodeHead(None, "cannot reach x: refused"), "cannot reach x: refused"),
        (
            GitContext("a" * 40, "main", clean=False, reason="uncommitted"),
            CodeHead(CODE_SHA),
            "uncommitted",
        ),
        (STATE, None, "its head was not resolved"),
    ],
)
def test_code_runs_skipped_say_why(git: GitContext, head: CodeHead | None, reason: str) -> None:
    heads = {} if head is None else {(CODE.repositories["shop"], ANY_BRANCH): head}
    [run] = plan_runs([(SHOP, ANY_BRANCH, ())], git, set(), Code(CODE.repositories, heads))
    assert (run.action, run.reason, run.idempotency_key) == ("skip", reason, None)
