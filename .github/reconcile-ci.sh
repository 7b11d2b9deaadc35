#!/usr/bin/env bash
# What the reconcile GitHub Actions of a desired-state repository run. The workflows call it;
# ops-reconciler's own tests run it with the variables GitHub sets.
#
#   reconcile-ci.sh pull-request   validate (annotations), then the diff against the base
#                                  branch and, with DATABASE_URL, the read-only plan: written to
#                                  $RUNNER_TEMP/reconcile-comment.md (path in $GITHUB_OUTPUT as
#                                  `comment`) and to the job summary
#   reconcile-ci.sh apply          migrate, then apply the state directory (push to main)
#   reconcile-ci.sh drift          the read-only plan; fails when the database differs
#
# Environment: STATE_DIR (default .), DATABASE_URL (a secret; never printed), GITHUB_BASE_REF,
# GITHUB_STEP_SUMMARY, GITHUB_OUTPUT, RUNNER_TEMP.
set -euo pipefail

state=${STATE_DIR:-.}
summary=${GITHUB_STEP_SUMMARY:-/dev/null}
temp=${RUNNER_TEMP:-$(mktemp -d)}
marker="<!-- ops-reconciler -->"

pull_request() {
  reconcile validate -C "$state"
  local comment="$temp/reconcile-comment.md"
  {
    echo "$marker"
    reconcile diff -C "$state" --base "origin/${GITHUB_BASE_REF:?}" --head HEAD \
      -o markdown --markdown-limit 30000
    if [ -n "${DATABASE_URL:-}" ]; then
      echo
      reconcile plan -C "$state" --read-only -o markdown --markdown-limit 30000 \
        --ref "${GITHUB_BASE_REF}"
    fi
  } > "$comment"
  cat "$comment" >> "$summary"
  echo "comment=$comment" >> "${GITHUB_OUTPUT:-/dev/null}"
}

apply() {
  : "${DATABASE_URL:?the apply needs the DATABASE_URL secret}"
  reconcile db migrate
  reconcile apply -C "$state" --yes -o markdown | tee -a "$summary"
}

drift() {
  : "${DATABASE_URL:?the drift check needs the DATABASE_URL secret}"
  local report="$temp/reconcile-drift.md" code=0
  reconcile plan -C "$state" --read-only --detailed-exitcode -o markdown > "$report" || code=$?
  cat "$report" >> "$summary"
  case $code in
    0) echo "The database matches the files." ;;
    2) echo "::error title=drift::The database differs from the files; see the job summary."
       exit 1 ;;
    *) exit "$code" ;;
  esac
}

case "${1:-}" in
  pull-request) pull_request ;;
  apply) apply ;;
  drift) drift ;;
  *) echo "usage: $0 pull-request | apply | drift" >&2; exit 1 ;;
esac
