#!/usr/bin/env bash
# Is keywardd's release build reproducible? Builds the last commit twice, from two checkouts in
# different folders (different names and depths) with target folders of their own, as
# packaging/build.sh builds it (the lock file, SOURCE_DATE_EPOCH from the commit, paths
# remapped), and compares the sha256 of the binaries and of the .deb files. Exit 0 identical,
# 1 not (then run diffoscope on the two, printed below). Each build compiles every dependency
# from nothing: about two release builds' time, so CI does not run it.
#   ./dev repro        keywardd built alone (`packaging/build.sh keywardd`)
#   ./dev repro all    as `packaging/build.sh` builds it, with the desktop app in the same
#                      cargo invocation (what `./dev test` packages); the desktop's binary is
#                      compared too
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-keywardd}
commit=$(git rev-parse HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "note: uncommitted changes are not built; this checks $commit" >&2
fi
scratch=${KEYWARD_REPRO_DIR:-$(mktemp -d /tmp/keyward-repro.XXXXXX)}
a=$scratch/a/keyward
b=$scratch/build-two/nested/keyward-again
for dir in "$a" "$b"; do
  mkdir -p "$dir"
  git archive "$commit" | tar -x -C "$dir"
  # The web UI the .deb ships is built once and copied to both (npm's output is not the subject).
  [ -f ui/dist/index.html ] || (cd ui && npm run build --silent)
  cp -r ui/dist "$dir/ui/dist"
done
export SOURCE_DATE_EPOCH
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct "$commit")
for dir in "$a" "$b"; do
  echo "== building $commit in $dir"
  (cd "$dir" && CARGO_TARGET_DIR="$dir/target" packaging/build.sh "$what" >/dev/null)
done
status=0
files=(release/keywardd "packages/keywardd_*.deb")
[ "$what" = keywardd ] || files+=(release/keyward-desktop)
for file in "${files[@]}"; do
  # shellcheck disable=SC2086 # the .deb's name is a glob
  left=$(sha256sum $a/target/$file | cut -d' ' -f1)
  # shellcheck disable=SC2086
  right=$(sha256sum $b/target/$file | cut -d' ' -f1)
  if [ "$left" = "$right" ]; then
    echo "identical: $file  $left"
  else
    echo "DIFFERENT: $file  $left (in $a) vs $right (in $b)"
    status=1
  fi
done
if [ $status = 0 ]; then
  rm -rf "$scratch"
else
  echo "compare them: diffoscope $a/target/release/keywardd $b/target/release/keywardd"
fi
exit $status
