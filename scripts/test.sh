#!/usr/bin/env bash
# The one command that runs all of ringnet's tests: format check, clippy with warnings as
# errors, doc tests, then every target (lib, bin, integration tests in tests/, benches in
# test mode) built with --release, because the end-to-end tests move GiBs through ringnet.
#
# The namespace/TAP tests in tests/ need root, /dev/net/tun, ip, ping, arping and python3
# (scripts/install-test-deps.sh installs the packages). Unprivileged they print
# "SKIP: <reason>" and pass; with CI=true they fail instead.
#
# Environment knobs passed through to the tests:
#   RINGNET_TEST_BULK_BYTES  size of each bulk transfer in tests/egress.rs (default 1 GiB)
#   RINGNET_TEST_VERBOSE     run ringnet with -v
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
cargo clippy --all-targets -- -D warnings
cargo test --release --doc
# Benches once each in test mode (criterion's --test), then every test target; the last
# summary line is the main run's.
cargo test --release --benches
cargo test --release --lib --bins --tests "$@"
