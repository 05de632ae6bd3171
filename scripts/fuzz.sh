#!/usr/bin/env bash
# ringnet's fuzz targets (fuzz/fuzz_targets/, cargo-fuzz + libFuzzer), in two modes:
#
#   scripts/fuzz.sh smoke [TARGET...]     every target (or those named) for RINGNET_FUZZ_SECS
#                                         seconds (default 30) from its committed seeds
#                                         (fuzz/seeds/TARGET, into a scratch corpus), one
#                                         target per core at a time (RINGNET_FUZZ_JOBS);
#                                         scripts/test.sh runs this, so CI does
#   scripts/fuzz.sh campaign [TARGET...]  every target until RINGNET_FUZZ_RUNS executions
#                                         (default 10,000,000) on its persistent corpus
#                                         fuzz/corpus/TARGET (gitignored; seeded from
#                                         fuzz/seeds/TARGET), RINGNET_FUZZ_JOBS targets at a
#                                         time (default 1); one line per target appended to
#                                         fuzz/results/campaign-DATE.md
#
# Either mode fails (exit 1) on the first crash, leak or timeout libFuzzer reports; the
# input is in fuzz/artifacts/TARGET/. Reproduce with
#   fuzz/target/x86_64-unknown-linux-gnu/release/TARGET fuzz/artifacts/TARGET/crash-...
#
# The machine's toolchain may be stable only (CI's is): cargo-fuzz needs nightly flags,
# which a stable rustc accepts with RUSTC_BOOTSTRAP=1 (set here when rustc is not a
# nightly). Targets are built with debug assertions and overflow checks on
# (`cargo fuzz build -a`), without a sanitizer (`--sanitizer none`: the code under test is
# safe Rust apart from the pool's and rings' `unsafe`, which their own tests and Miri-style
# stress cover; AddressSanitizer would halve the rate). cargo-fuzz is installed from
# crates.io when missing (`cargo install cargo-fuzz --locked`, ~2 minutes once).
#
# Knobs: RINGNET_FUZZ_SECS (smoke seconds per target; 0 skips the smoke with a printed
# line), RINGNET_FUZZ_RUNS (campaign executions per target), RINGNET_FUZZ_JOBS (targets at
# a time).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-smoke}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
	mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^ringnet-fuzz$')
fi

secs=${RINGNET_FUZZ_SECS:-30}
if [ "$mode" = smoke ] && [ "$secs" = 0 ]; then
	echo "fuzz: smoke run skipped (RINGNET_FUZZ_SECS=0)"
	exit 0
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
	echo "fuzz: installing cargo-fuzz from crates.io"
	cargo install cargo-fuzz --locked --quiet
fi
if ! rustc --version | grep -q nightly; then
	export RUSTC_BOOTSTRAP=1
fi

echo "fuzz: building ${#targets[@]} targets"
(cd fuzz && cargo fuzz build --sanitizer none -a >/dev/null 2>&1) || {
	(cd fuzz && cargo fuzz build --sanitizer none -a)
	exit 1
}
bin=fuzz/target/x86_64-unknown-linux-gnu/release

# run TARGET CORPUS ARGS...: libFuzzer on CORPUS (and the seeds); prints one summary line.
run() {
	local t=$1 corpus=$2
	shift 2
	local log
	log=$(mktemp)
	mkdir -p "fuzz/artifacts/$t"
	local seeds=()
	[ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
	local start=$SECONDS rc=0
	"$bin/$t" "$corpus" "${seeds[@]}" -artifact_prefix="fuzz/artifacts/$t/" -timeout=10 \
		-rss_limit_mb=2048 -print_final_stats=1 "$@" >"$log" 2>&1 || rc=$?
	local execs rate
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
	if [ $rc -ne 0 ]; then
		tail -40 "$log" >&2
		echo "fuzz: $t: FAILED (libFuzzer exit $rc) after ${execs:-?} executions; input in fuzz/artifacts/$t/" >&2
		rm -f "$log"
		return 1
	fi
	rm -f "$log"
	echo "$t ${execs:-0} ${rate:-0} $((SECONDS - start))"
}

# pool CMD TARGET...: CMD TARGET for every target, RINGNET_FUZZ_JOBS at a time (default:
# one per core in a smoke run, 1 in a campaign); fails when any fails.
pool() {
	local cmd=$1
	shift
	local pids=() t p
	for t in "$@"; do
		"$cmd" "$t" &
		pids+=($!)
		if [ ${#pids[@]} -ge "$jobs" ]; then
			wait "${pids[0]}" || return 1
			pids=("${pids[@]:1}")
		fi
	done
	for p in "${pids[@]}"; do wait "$p" || return 1; done
}

case "$mode" in
smoke)
	jobs=${RINGNET_FUZZ_JOBS:-$(nproc)}
	scratch=$(mktemp -d)
	trap 'rm -rf "$scratch"' EXIT
	smoke_one() {
		local t=$1 line name execs rate took
		mkdir -p "$scratch/$t"
		line=$(run "$t" "$scratch/$t" -max_total_time="$secs") || return 1
		read -r name execs rate took <<<"$line"
		printf 'fuzz: %-18s %10d executions in %3d s (%d/s), 0 crashes\n' "$name" "$execs" "$took" "$rate"
	}
	pool smoke_one "${targets[@]}"
	;;
campaign)
	runs=${RINGNET_FUZZ_RUNS:-10000000}
	jobs=${RINGNET_FUZZ_JOBS:-1}
	mkdir -p fuzz/results
	out="fuzz/results/campaign-$(date -u +%Y%m%d).md"
	[ -f "$out" ] || printf '| target | executions | rate (/s) | seconds | crashes | corpus | date |\n|---|---|---|---|---|---|---|\n' >"$out"
	campaign_one() {
		local t=$1 line name execs rate took n
		mkdir -p "fuzz/corpus/$t"
		line=$(run "$t" "fuzz/corpus/$t" -runs="$runs") || return 1
		read -r name execs rate took <<<"$line"
		n=$(find "fuzz/corpus/$t" -type f | wc -l)
		printf '| %s | %d | %d | %d | 0 | %d files | %s |\n' "$name" "$execs" "$rate" "$took" "$n" \
			"$(date -u +%Y-%m-%dT%H:%MZ)" >>"$out"
		echo "fuzz: $name: $execs executions in $took s, 0 crashes"
	}
	pool campaign_one "${targets[@]}"
	echo "fuzz: results in $out"
	;;
*)
	echo "usage: scripts/fuzz.sh smoke|campaign [TARGET...]" >&2
	exit 2
	;;
esac
