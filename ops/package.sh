#!/usr/bin/env bash
# Builds the Debian packages into target/debian/: `staticwire` (staticwire-router,
# staticwire-control, their units, default config) and `staticip` (the client and its unit),
# from release binaries, stripped; their debug symbols go to staticwire-dbgsym and
# staticip-dbgsym (.ddeb, install them to get symbolized backtraces and profiles).
# ops/test-packages.sh checks the same packaging from debug binaries, ops/test-systemd.sh these.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo deb --version >/dev/null 2>&1 || cargo install cargo-deb --locked
cargo build --release -p staticwire-router -p staticwire-control -p staticip
cargo deb -p staticwire-control --no-build --dbgsym
cargo deb -p staticwire-control --variant staticip --no-build --dbgsym
ls -l ${CARGO_TARGET_DIR:-target}/debian/*.deb ${CARGO_TARGET_DIR:-target}/debian/*.ddeb
