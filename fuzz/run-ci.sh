#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and fails on any crash (README.md, "Fuzzing").
#
#   fuzz/run-ci.sh                      # every target, FUZZ_SECONDS (default 60) each
#   FUZZ_SECONDS=600 fuzz/run-ci.sh server_machine client_machine
#
# Installs cargo-fuzz if it is missing, builds the seed corpus from spec/ (fuzz/make-corpus.py),
# builds the targets with AddressSanitizer on the stable toolchain (RUSTC_BOOTSTRAP=1: cargo-fuzz
# needs -Zsanitizer), then runs FUZZ_JOBS targets at a time (default 2, one per CI core). A crash,
# a panic (a broken property), a hang over 10 s, an allocation over FUZZ_MALLOC_MB or a process
# over 2 GiB fails the run; the input is left in fuzz/artifacts/<target>/ and printed in hex.
# Prints executions per second for each target at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-2}
malloc_mb=${FUZZ_MALLOC_MB:-256}
all_targets=(c2s_stream s2c_stream server_machine client_machine legacy transcript)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi

export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
cargo fuzz --version

echo "==> seed corpus from spec/"
python3 fuzz/make-corpus.py

echo "==> building the targets (AddressSanitizer, debug assertions)"
cargo fetch --locked --manifest-path fuzz/Cargo.toml
cargo fuzz build --debug-assertions

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

run_target() {
    local t=$1
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    # -max_len: the seeds include 100 kB transcripts; new inputs stay at most 64 kB.
    if cargo fuzz run --debug-assertions "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb="$malloc_mb" \
        -max_len=65536 -dict=fuzz/ferry.dict -print_final_stats=1 >"$logs/$t.log" 2>&1; then
        echo ok >"$logs/$t.status"
    else
        echo failed >"$logs/$t.status"
    fi
}

echo "==> fuzzing ${#targets[@]} targets, ${seconds} s each, ${jobs} at a time"
running=0
for t in "${targets[@]}"; do
    run_target "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait

failed=()
total=0
printf '\n%-16s %12s %10s %8s  %s\n' target executions "exec/s" corpus result
for t in "${targets[@]}"; do
    log="$logs/$t.log"
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    corpus=$(sed -n 's/.*corp: \([0-9]*\)\/.*/\1/p' "$log" | tail -n 1)
    status=$(cat "$logs/$t.status")
    printf '%-16s %12s %10s %8s  %s\n' "$t" "${runs:--}" "${rate:--}" "${corpus:--}" "$status"
    total=$((total + ${runs:-0}))
    if [ "$status" != ok ]; then
        failed+=("$t")
    fi
done
echo "total executions: $total"

for t in "${failed[@]}"; do
    echo
    echo "==> $t failed; the end of its log:"
    grep -v -E '^#[0-9]+ +(NEW|REDUCE|pulse)' "$logs/$t.log" | tail -n 60
    for f in "fuzz/artifacts/$t"/*; do
        [ -f "$f" ] || continue
        echo "--- $f (reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run $t $f)"
        od -A x -t x1z -v "$f" | head -n 40
    done
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing failed: ${failed[*]}"
    exit 1
fi
