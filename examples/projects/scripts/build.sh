#!/bin/sh
# Build: bundle the addons of the checked-out commit into dist/<project>-addons.tar.gz.
# Runs in the run's workspace ($OPS_WORKSPACE), the repository at the run's commit.
set -eu
mkdir -p dist
out="dist/${OPS_PROJECT:-local}-addons.tar.gz"
# a reproducible archive: sorted names, fixed owner and time, so a commit builds the same bytes
find addons -type f | LC_ALL=C sort > dist/files.txt
tar --owner=0 --group=0 --numeric-owner --mtime='2000-01-01 00:00Z' --no-recursion \
  -cf - -T dist/files.txt | gzip -n > "$out"
rm dist/files.txt
echo "built $out from ${OPS_COMMIT:-the working tree}: $(wc -c < "$out") bytes"
