#!/usr/bin/env bash
# `ferry put` and a cold `ferry get` of one large file against `md5sum` of the same file, with the
# digest first (`--digest-first`: the leading form, as before TRAILER) and after the data (the
# default with a ferryd that announces TRAILER), for each engine; all measured in one run, as
# ratios to md5sum's rate (above 1: faster than md5sum).
#
#   cargo build --release -p ferry -p ferryd
#   bash crates/bench/scripts/trailer_rates.sh target/release [MIB] [ROUNDS]
#
# DIR (default /dev/shm) holds the file, the server's root and the downloads: on a tmpfs, every
# read is from memory, for md5sum as for ferry, and no disk is timed. OLD_FERRY=/path/to/ferry
# adds a column for another client binary (one built before TRAILER, say), run without
# --digest-first. Each transfer gets a fresh ferryd (`--digests off --background-hashes 0`), so
# the server knows no digest: an upload is hashed as it arrives, and a GET of the file before it
# is sent (or, with FETCH, as it is sent). The client runs with --no-digest-cache, so it knows
# none either. Each figure is the median of ROUNDS (default 3), md5sum's too, interleaved.
set -euo pipefail

BIN=${1:?usage: trailer_rates.sh RELEASE_DIR [MIB] [ROUNDS]}
MIB=${2:-1024}
ROUNDS=${3:-3}
DIR=${DIR:-/dev/shm}
FERRY="$BIN/ferry"
FERRYD="$BIN/ferryd"
WORK=$(mktemp -d "$DIR/trailer-rates.XXXXXX")
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

FILE="$WORK/big.bin"
head -c $((MIB << 20)) /dev/urandom >"$FILE"
EXPECT=$(md5sum "$FILE" | cut -d' ' -f1)

# Starts ferryd with ENGINE (and any more arguments) on a fresh root; sets ADDR.
start_server() {
    local engine=$1
    shift
    rm -rf "$WORK/root" "$WORK/ferryd.out"
    mkdir "$WORK/root"
    "$FERRYD" --listen 127.0.0.1:0 --root "$WORK/root" --engine "$engine" --anonymous write \
        --digests off --background-hashes 0 --log-level warn "$@" >"$WORK/ferryd.out" 2>"$WORK/ferryd.log" &
    SERVER_PID=$!
    local tries=0
    until grep -q '^listening on ' "$WORK/ferryd.out" 2>/dev/null; do
        tries=$((tries + 1))
        [ "$tries" -lt 300 ] || { echo "ferryd did not start:" >&2; cat "$WORK/ferryd.log" >&2; exit 1; }
        sleep 0.05
    done
    ADDR=$(sed -n 's/^listening on //p' "$WORK/ferryd.out" | head -n1)
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

now() { date +%s.%N; }

# Seconds taken by the command given.
timed() {
    local t0 t1
    t0=$(now)
    "$@" >/dev/null
    t1=$(now)
    echo "$t1 - $t0" | bc -l
}

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# One upload of the file to a fresh server: ENGINE CLIENT [ferry options...]
put_once() {
    local engine=$1 client=$2
    shift 2
    start_server "$engine"
    local t
    t=$(timed "$client" --server "$ADDR" --quiet --no-digest-cache "$@" put "$FILE" --as up.bin)
    [ "$(md5sum "$WORK/root/up.bin" | cut -d' ' -f1)" = "$EXPECT" ] || { echo "stored file differs" >&2; exit 1; }
    stop_server
    echo "$t"
}

# One download of the file, put into a fresh server's root by hand (so never hashed there).
get_once() {
    local engine=$1 client=$2
    shift 2
    start_server "$engine"
    cp "$FILE" "$WORK/root/cold.bin"
    rm -f "$WORK/cold.bin"
    local t
    t=$(cd "$WORK" && timed "$client" --server "$ADDR" --quiet --no-digest-cache "$@" get cold.bin --force)
    [ "$(md5sum "$WORK/cold.bin" | cut -d' ' -f1)" = "$EXPECT" ] || { echo "download differs" >&2; exit 1; }
    stop_server
    echo "$t"
}

declare -A T
add() { T[$1]="${T[$1]:-} $2"; }
COLUMNS_=("digest-first" "trailer")
[ -n "${OLD_FERRY:-}" ] && COLUMNS_+=("old")
for _ in $(seq "$ROUNDS"); do
    add md5sum "$(timed md5sum "$FILE")"
    for engine in blocking async; do
        for op in put get; do
            add "$op/$engine/digest-first" "$(${op}_once "$engine" "$FERRY" --digest-first)"
            add "$op/$engine/trailer" "$(${op}_once "$engine" "$FERRY")"
            [ -n "${OLD_FERRY:-}" ] && add "$op/$engine/old" "$(${op}_once "$engine" "$OLD_FERRY")"
        done
    done
done

# shellcheck disable=SC2086
MD5=$(median ${T[md5sum]})
rate() { echo "$MIB / $1" | bc -l; }
printf '%s MiB in %s, %s rounds (medians), %s CPUs, load %s\n' "$MIB" "$DIR" "$ROUNDS" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf 'md5sum: %.2f s, %.0f MiB/s\n' "$MD5" "$(rate "$MD5")"
for op in put get; do
    for engine in blocking async; do
        for col in "${COLUMNS_[@]}"; do
            # shellcheck disable=SC2086
            m=$(median ${T[$op/$engine/$col]})
            printf '%-4s %-8s %-13s %6.2f s  %5.0f MiB/s  %.2fx md5sum  (rounds:%s)\n' \
                "$op" "$engine" "$col" "$m" "$(rate "$m")" "$(echo "$MD5 / $m" | bc -l)" "${T[$op/$engine/$col]}"
        done
    done
done
