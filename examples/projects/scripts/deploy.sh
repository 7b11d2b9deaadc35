#!/bin/sh
# deploy: the example prints what it would do; a real fleet replaces it with its own script
# (secrets it needs come from the worker: list their names under the workflow's config.secrets).
set -eu
echo "deploy ${OPS_PROJECT:-?} at ${OPS_COMMIT:-?}: $*"
