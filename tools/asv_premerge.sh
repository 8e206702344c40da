#!/usr/bin/env bash
# Pre-merge speed check: asv continuous of the working tree against a base branch (main).
#
#   bash tools/asv_premerge.sh [BASE] [asv continuous options, e.g. -b bench_inference]
#
# The working tree goes in as it is: changed and untracked files (ignored ones excepted), as
# a commit object that no branch points to (refs/asv/premerge while the check runs).
# Exits 1 when asv finds a benchmark slower than BASE by more than FASTBP_PREMERGE_FACTOR
# (default 1.2) with statistical significance (asv's test over the samples of both), or one
# that fails; 0 otherwise. The table of changes is printed either way. Both commits are
# built in asv's virtualenvs (asv.conf.json's matrix), which the first run creates.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"

base=main
if [[ $# -gt 0 && $1 != -* ]]; then base=$1; shift; fi
factor=${FASTBP_PREMERGE_FACTOR:-1.2}
git rev-parse --verify --quiet "$base^{commit}" >/dev/null \
    || { echo "asv_premerge: no commit named '$base'" >&2; exit 2; }

index=$(mktemp)
trap 'rm -f "$index"; git update-ref -d refs/asv/premerge 2>/dev/null || true' EXIT
cp "$(git rev-parse --git-dir)/index" "$index"
GIT_INDEX_FILE=$index git add -A
tree=$(GIT_INDEX_FILE=$index git write-tree)
tip=$(git commit-tree "$tree" -p HEAD -m "asv pre-merge check: the working tree")
git update-ref refs/asv/premerge "$tip"

asv machine --yes >/dev/null
echo "asv_premerge: $base ($(git rev-parse --short "$base")) against the working tree" \
     "($(git rev-parse --short "$tip")), failing beyond a factor of $factor"
# --no-interleave-rounds: the base's rounds, then the tip's. Pass --interleave-rounds (the
# later flag wins) for base, tip, tip, base, which spreads the VM's drift over both; its one
# no-change run so far shared the machine with another asv run (docs/performance.md).
set +e
asv continuous --factor "$factor" --no-interleave-rounds --split --show-stderr "$@" \
    "$base" "$tip"
rc=$?
set -e
if [[ $rc -eq 0 ]]; then
    echo "asv_premerge: no significant slowdown beyond $factor"
else
    echo "asv_premerge: FAILED: slower beyond $factor, or a benchmark failed (table above)" >&2
fi
exit $rc
