#!/bin/sh
# Test: every addon has a manifest Python can read (a real suite would run Odoo's tests in
# the project's Odoo image: give the workflow `tool: odoo@<version>`).
set -eu
for manifest in addons/*/__manifest__.py; do
  python3 -c 'import ast, sys; ast.literal_eval(open(sys.argv[1]).read())' "$manifest"
  echo "ok $manifest${1:+ ($*)}"
done
