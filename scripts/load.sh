#!/usr/bin/env bash
# Load test over real HTTP on loopback: requests per second, p99 latency and server CPU time per
# request of one charge handler served plain and under #[idempotent(post)], both in one binary
# (benches/load_server.rs):
#
#   plain   POST /plain/charges: the handler without the attribute;
#   first   POST /full/charges with a fresh key on every request, on a store kept at its bound
#           (every first execution evicts a record);
#   forget  POST /full/charges with a fresh key on every request, under keys whose completion the
#           store forgets: the same first execution without moka's insertion of its record;
#   vacant  POST /full/charges with a fresh key on every request, under keys the store hands to an
#           empty store of its own and forgets: the same first execution without moka's insertion
#           and without the look of a new key into moka's full table;
#   roomy   POST /roomy/charges with a fresh key on every request, on a store far from its bound;
#   replay  POST /full/charges with one key over and over;
#   floor   POST /floor/charges with one key over and over: not the layer, but the least any
#           replay can do (benches/support: the key, the body's SHA-256 digest, one moka get at
#           the bound, the stored answer), written straight against axum and moka;
#   busy    POST /busy/charges: a control, the plain handler spinning LOAD_BUSY_MICROS (default
#           11) on the CPU, touching no memory: how the server's CPU per request, the kernel's
#           included, grows with a handler's own cost alone;
#   store   POST /store/charges: the plain handler plus a claim and a completion of a fresh key on
#           the full store, outside the layer;
#   moka    POST /moka/charges: the plain handler plus moka's own insertion of a record into a
#           bare cache at the same bound;
#   moka_roomy  POST /moka_roomy/charges: the plain handler plus moka's own insertion into a bare
#           cache of 4 GiB that the load never fills (roomy's moka alone).
#
#   scripts/load.sh                  # 3 rounds of 10 s per mode
#   ROUNDS=5 DURATION=20s CONNECTIONS=32 scripts/load.sh
#   MODES="plain replay floor" scripts/load.sh     # some of the modes (plain always runs)
#   SERVER_BIN=/other/target/release/deps/load_server-… scripts/load.sh
#                                    # a server built elsewhere, e.g. from an older commit
#
# Needs wrk and taskset. The server is pinned to CPU 0 (SERVER_CPU) and the single wrk thread to
# CPU 1 (CLIENT_CPU). The modes run interleaved, round after round, so that a noisy neighbour slows
# all of them alike; each figure is the median over the rounds, and each ratio the median of the
# rounds' ratios to the plain run of the same round, so that a drift between rounds cancels out
# of the ratios. Server CPU time is the change of
# utime + stime in /proc/<pid>/stat over a run, divided by the requests it served: with one load
# thread the plain server waits on its client, so requests per second alone understate the cost.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT=${PORT:-3917}
ALL_MODES="plain first forget vacant roomy replay floor busy store moka moka_roomy"
read -r -a MODES <<<"${MODES:-$ALL_MODES}"
for mode in "${MODES[@]}"; do
    grep -qw -- "$mode" <<<"$ALL_MODES" || { echo "unknown mode '$mode'; the modes: $ALL_MODES" >&2; exit 1; }
done
# Whether every mode named ran (is in MODES).
ran() {
    for mode in "$@"; do
        grep -qw -- "$mode" <<<"${MODES[*]}" || return 1
    done
}
# Every ratio is to plain, so plain always runs; when it was not named, it runs first in each round.
ran plain || MODES=(plain "${MODES[@]}")

for tool in wrk taskset; do
    command -v "$tool" >/dev/null || { echo "load.sh needs $tool" >&2; exit 1; }
done

if [ -n "${SERVER_BIN:-}" ]; then
    server_bin=$SERVER_BIN
    [ -x "$server_bin" ] || { echo "SERVER_BIN=$server_bin is not an executable" >&2; exit 1; }
else
    server_bin=$(cargo bench --bench load_server --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*load_server[^"]*\)".*/\1/p' | tail -n 1)
    [ -x "$server_bin" ] || { echo "could not build benches/load_server.rs" >&2; exit 1; }
fi

log=$(mktemp)
LOAD_ADDR="127.0.0.1:$PORT" taskset -c "$SERVER_CPU" "$server_bin" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$log"' EXIT
# Filling the full store takes a few seconds.
for _ in $(seq 600); do
    grep -q listening "$log" && break
    sleep 0.1
done
grep -q listening "$log" || { echo "the server did not start:" >&2; cat "$log" >&2; exit 1; }

# Server CPU time so far, in clock ticks (USER_HZ, 100 per second on Linux).
cpu_ticks() {
    # Fields 14 and 15 of the stat line; the command name (field 2) has no spaces here.
    awk '{ print $14 + $15 }' "/proc/$server/stat"
}

clock_hz=$(getconf CLK_TCK)
declare -A rps p99 cpu
# Each round's figures, by "mode round": the ratios are taken within a round.
declare -A round_r round_p round_c
for round in $(seq "$ROUNDS"); do
    for mode in "${MODES[@]}"; do
        run="$$-$round-$mode"
        if [ "$mode" = replay ]; then
            # Store the answer once, so that every timed request is a replay.
            curl -fsS -o /dev/null -X POST "http://127.0.0.1:$PORT/full/charges" \
                -H 'Content-Type: application/json' -H "Idempotency-Key: charge-$run-replayed" \
                -d '{"amount":1999,"currency":"eur"}' 2>/dev/null || true
        fi
        before=$(cpu_ticks)
        out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency \
            -s scripts/load.lua "http://127.0.0.1:$PORT" -- "$mode" "$run")
        after=$(cpu_ticks)
        if grep -q 'Non-2xx' <<<"$out"; then
            echo "$mode: some answers were not 2xx:" >&2
            echo "$out" >&2
            exit 1
        fi
        requests=$(awk '/requests in/ { print $1 }' <<<"$out")
        r=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
        p=$(awk '$1 == "99%" { v = $2; if (v ~ /ms$/) { sub(/ms/, "", v); v *= 1000 } else if (v ~ /us$/) { sub(/us/, "", v) } else if (v ~ /s$/) { sub(/s/, "", v); v *= 1000000 } print v }' <<<"$out")
        c=$(awk -v t=$((after - before)) -v n="$requests" -v hz="$clock_hz" 'BEGIN { printf "%.2f", t / hz / n * 1e6 }')
        rps[$mode]+="$r "
        p99[$mode]+="$p "
        cpu[$mode]+="$c "
        round_r["$mode $round"]=$r
        round_p["$mode $round"]=$p
        round_c["$mode $round"]=$c
        printf 'round %d %-10s %10s req/s  p99 %8s µs  server CPU %6s µs/req\n' "$round" "$mode" "$r" "$p" "$c" >&2
    done
done

median() {
    tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

echo
# The median over the rounds of a mode's figure (from round_r, round_p or round_c) divided by
# plain's of the same round.
ratio() {
    local -n figures=$1
    for round in $(seq "$ROUNDS"); do
        awk -v a="${figures["$2 $round"]}" -v b="${figures["plain $round"]}" 'BEGIN { print a / b }'
    done | median
}

echo "POST /*/charges over loopback, wrk -t1 -c$CONNECTIONS -d$DURATION, median of $ROUNDS rounds;"
echo "each ratio is the median of the rounds' ratios to plain's run in the same round"
printf '%-10s %12s %8s %10s %8s %14s %8s\n' mode 'req/s' ratio 'p99 µs' ratio 'CPU µs/req' ratio
base_c=$(median <<<"${cpu[plain]}")
for mode in "${MODES[@]}"; do
    r=$(median <<<"${rps[$mode]}")
    p=$(median <<<"${p99[$mode]}")
    c=$(median <<<"${cpu[$mode]}")
    awk -v m="$mode" -v r="$r" -v rr="$(ratio round_r "$mode")" -v p="$p" -v pr="$(ratio round_p "$mode")" \
        -v c="$c" -v cr="$(ratio round_c "$mode")" \
        'BEGIN { printf "%-10s %12.0f %7.2fx %10.0f %7.2fx %14.2f %7.2fx\n", m, r, rr, p, pr, c, cr }'
done

# The split, from the medians: what a first execution adds to a plain request's server CPU.
if ran first forget vacant store moka; then
    first_c=$(median <<<"${cpu[first]}")
    forget_c=$(median <<<"${cpu[forget]}")
    vacant_c=$(median <<<"${cpu[vacant]}")
    store_c=$(median <<<"${cpu[store]}")
    moka_c=$(median <<<"${cpu[moka]}")
    awk -v p="$base_c" -v f="$first_c" -v g="$forget_c" -v v="$vacant_c" -v s="$store_c" -v m="$moka_c" 'BEGIN {
        printf "\nfirst adds %.2f µs of server CPU to plain. In place: moka'"'"'s insertion and what it causes %.2f µs (first - forget), the look of a new key into moka'"'"'s full table %.2f µs (forget - vacant), the rest %.2f µs (vacant - plain); first without moka'"'"'s insertion is %.2fx plain, without its look too %.2fx. Outside the layer: the store'"'"'s claim and completion %.2f µs, of which moka'"'"'s insertion %.2f µs.\n", f - p, f - g, g - v, v - p, g / p, v / p, s - p, m - p
    }'
fi

# What a replay adds, against the least any replay can do.
if ran replay floor; then
    replay_c=$(median <<<"${cpu[replay]}")
    floor_c=$(median <<<"${cpu[floor]}")
    awk -v p="$base_c" -v r="$replay_c" -v f="$floor_c" 'BEGIN {
        printf "replay adds %.2f µs of server CPU to plain, the least a replay can do (floor) %.2f µs: the layer'"'"'s plumbing %.2f µs.\n", r - p, f - p, r - f
    }'
fi

# What moka's insertion alone adds far from its bound, against a first execution there.
if ran roomy moka_roomy; then
    roomy_c=$(median <<<"${cpu[roomy]}")
    moka_roomy_c=$(median <<<"${cpu[moka_roomy]}")
    awk -v p="$base_c" -v y="$roomy_c" -v m="$moka_roomy_c" 'BEGIN {
        printf "Far from the bound, a first execution (roomy) adds %.2f µs, moka'"'"'s insertion alone there (moka_roomy) %.2f µs (%.2fx plain).\n", y - p, m - p, m / p
    }'
fi
