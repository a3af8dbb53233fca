#!/usr/bin/env bash
# Reliability and security checks (issue 12) that are not plain `cargo test`: licenses, bans and
# sources of every dependency (cargo-deny, offline), and a short coverage-guided fuzz run of each
# target in fuzz/ (corpora in fuzz/corpus/, grown by the run). The property tests, abuse and
# fault tests are ordinary tests and run with `cargo test --workspace`.
#   bash ops/test-reliability.sh                 # what the test command runs (about 2 min when built)
#   FUZZ_SECONDS=3600 bash ops/test-reliability.sh fuzz   # the long run: an hour per target
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
what=${1:-all}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}

if [ "$what" = all ] || [ "$what" = deny ]; then
  if ! command -v cargo-deny >/dev/null; then
    echo "== installing cargo-deny (once; about 3 min on 2 cores)"
    cargo install cargo-deny --locked -q
  fi
  # cargo deny reads the metadata of every target platform; a build only downloads this one's
  # crates, so a machine that never built for Windows or macOS lacks some. Fetch them all first
  # (from the locked registry), then check offline: --offline only keeps cargo-deny from
  # fetching its advisory database, which these three checks do not read.
  echo "== cargo fetch --locked (every target's crates, for cargo deny)"
  cargo fetch --locked -q
  echo "== cargo deny check licenses bans sources (offline)"
  cargo deny --offline check licenses bans sources
fi

if { [ "$what" = all ] || [ "$what" = fuzz ]; } && [ -d fuzz ]; then
  if ! command -v cargo-fuzz >/dev/null; then
    echo "== installing cargo-fuzz (once)"
    cargo install cargo-fuzz --locked -q
  fi
  # cargo-fuzz needs nightly flags (-Z sanitizer); the stable toolchain accepts them this way.
  export RUSTC_BOOTSTRAP=1
  for t in $(cargo fuzz list --fuzz-dir fuzz); do
    echo "== fuzz $t for ${FUZZ_SECONDS}s"
    mkdir -p "fuzz/corpus/$t"
    # The test command reads the kept corpus and writes what it finds to a scratch dir (the
    # checkout stays clean); the long run (`... fuzz`) grows the kept corpus.
    if [ "$what" = fuzz ]; then new="fuzz/corpus/$t"; else new=$(mktemp -d); fi
    log=$(mktemp)
    if ! cargo fuzz run --fuzz-dir fuzz "$t" "$new" "fuzz/corpus/$t" -- \
      -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=1024 -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
      tail -60 "$log" >&2
      echo "FUZZ FAILURE in $t (artifacts in fuzz/artifacts/$t)" >&2
      exit 1
    fi
    grep -E '^(Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
    rm -f "$log"
    [ "$new" = "fuzz/corpus/$t" ] || rm -rf "$new"
    if ls fuzz/artifacts/"$t"/crash-* fuzz/artifacts/"$t"/oom-* fuzz/artifacts/"$t"/leak-* >/dev/null 2>&1; then
      echo "FUZZ FAILURE in $t: see fuzz/artifacts/$t" >&2
      exit 1
    fi
  done
fi
echo "== reliability checks passed in $((SECONDS - start)) s"
