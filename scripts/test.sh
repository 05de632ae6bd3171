#!/usr/bin/env bash
# The one command that runs all of ringnet's tests: format check, clippy with warnings as
# errors, the library without default features (it builds, lints clean and has no clap,
# tracing-subscriber or toml in `cargo tree`), doc tests, then every target (lib, bin,
# integration tests in tests/, benches in test mode) built with --release, because the
# end-to-end tests move GiBs through ringnet.
#
# The namespace/TAP tests in tests/ need root, /dev/net/tun, ip, ping, arping, python3, and
# for tests/dns.rs and tests/policy.rs dnsmasq, dig and unshare (scripts/install-test-deps.sh
# installs the packages). The VM tests (tests/vm_*.rs) also need qemu-system-x86 and, once, a
# network path to Debian's archive: they build a kernel + busybox initramfs from Debian
# packages into target/vmkit/ (~10 s, cached). Unprivileged they print
# "SKIP: <reason>" and pass; with CI=true they fail instead.
#
# Environment knobs passed through to the tests:
#   RINGNET_TEST_BULK_BYTES  size of each bulk transfer in tests/egress.rs (default 1 GiB)
#   RINGNET_TEST_VERBOSE     run ringnet with -v
#   RINGNET_FUZZ_SECS        seconds per fuzz target in the closing smoke run (default 30;
#                            0 skips it, saying so)
#   RINGNET_FLOOD_SECS       how long each flood and the legit upload under it run in
#                            tests/floods.rs (default 6)
#   RINGNET_FLOOD_SCALE      multiplies every flood's frame count in tests/floods.rs (default 1)
#   RINGNET_SOAK_SECS        duration of tests/soak.rs (default 300, the issue's 5 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
cargo clippy --all-targets -- -D warnings
# The engine alone, as an embedding VMM builds it (`default-features = false`): it must build,
# lint clean, and pull in none of the command line's dependencies.
cargo clippy --no-default-features --lib -- -D warnings
cargo build --release --no-default-features --lib
engine_deps=$(cargo tree --no-default-features -e normal --prefix none)
if cli_deps=$(grep -E '^(clap|clap_[a-z_]+|toml|toml_[a-z_]+|tracing-subscriber) v' <<<"$engine_deps"); then
    echo "error: the library without the cli feature depends on:" >&2
    sort -u <<<"$cli_deps" >&2
    exit 1
fi
cargo test --release --doc
# Benches once each in test mode (criterion's --test), then every test target; the last
# summary line is the main run's.
cargo test --release --benches
cargo test --release --lib --bins --tests "$@"
# Every fuzz target for RINGNET_FUZZ_SECS seconds (default 30) from its committed seeds.
bash scripts/fuzz.sh smoke
