#!/usr/bin/env bash
# lockstep and its peers, side by side in one run on this machine:
#   1. ingest: a bare hyper server answering 200 (the ceiling of an HTTP server here)
#      against lockstep's durable ingest (POST /v1/events, every event fsynced before
#      its answer), both driven by wrk over loopback with the same connections; bare
#      hyper is run twice, on static 1 KiB bodies and on the very one-event requests
#      lockstep gets (same wrk script), so the one-event ratio compares like with like;
#      and signed Shopify `orders/create` webhooks, one event each (loadgen's
#      `signed_hooks` driver, which signs every request as wrk cannot), sent to both;
#   2. one hot SKU: lockstep taking orders for one SKU against PostgreSQL's row-locked
#      `UPDATE stock SET qty = qty - 1 WHERE sku = ? AND qty > 0` (pgbench, durable
#      commits), on random SKUs and on one hot SKU.
# Prints each figure, the peer's, and the ratio, and for the one-event rounds where the
# CPU went: each server's and wrk's per request, and the machine's idle share (on 2
# cores wrk takes as much as bare hyper does, so a ratio is theirs together). The two
# one-event ratios are taken in ROUNDS rounds (3 by default), bare hyper then lockstep in
# each, both servers up all along: the machine's speed drifts by a quarter between runs
# a minute apart, so a ratio is formed within a round and the median round's is
# printed, beside every round's.
# Installs wrk and PostgreSQL from the system's packages when missing; PostgreSQL runs on
# loopback from a temp data directory and is stopped afterwards.
#
#   bash benches/peers.sh            # DURATION=10 CONNECTIONS=64 ROUNDS=3 by default
set -euo pipefail

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-3}
BATCH=${BATCH:-50}          # events per request in the batched ingest run
SKUS=${SKUS:-10000}
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d /tmp/lockstep-peers.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -n "${pg_bin:-}" ] && [ -d "$work/pg" ]; then
        "$pg_bin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
install_packages() {
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

command -v wrk >/dev/null || install_packages wrk
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ] || ! command -v pgbench >/dev/null; then
    install_packages postgresql postgresql-contrib
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi

echo "building (release)..."
cargo build --release --workspace -q

# Starts a server that prints "... http://ADDR" on its first line; sets $url.
start() {
    local log=$1; shift
    "$@" >"$log" 2>"$log.err" &
    pids+=($!)
    for _ in $(seq 1 100); do
        url=$(grep -o 'http://[0-9.:]*' "$log" | head -1 || true)
        [ -n "$url" ] && return 0
        sleep 0.1
    done
    echo "could not start: $*" >&2; cat "$log.err" >&2; exit 1
}

# Requests/s from wrk's output.
rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
product() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", a * b }'; }

wrk_run() {  # wrk_run OUT URL SCRIPT [ENV=...]
    local out=$1 url=$2 script=$3; shift 3
    env "$@" wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s "$script" "$url" >"$out"
}

# A process's CPU in clock ticks; the machine's ticks and idle ticks (/proc/stat).
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
machine() { awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5}' /proc/stat; }
# cpu_run PID OUT URL SCRIPT [ENV=...]: wrk_run, and in OUT.cpu the µs of CPU per
# request of the server (PID) and of wrk, and the machine's idle percent meanwhile.
cpu_run() {
    local pid=$1 out=$2 before t1 i1 t2 i2 wrk_s
    shift
    before=$(ticks "$pid")
    read -r t1 i1 < <(machine)
    # `times` reports the group's children: wrk, in seconds as "XmY.YYYs".
    wrk_s=$({ wrk_run "$@"; times; } | awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); t += a[1] * 60 + a[2] } print t }')
    read -r t2 i2 < <(machine)
    awk -v s=$(( $(ticks "$pid") - before )) -v w="$wrk_s" -v hz="$hz" -v idle=$(( i2 - i1 )) \
        -v all=$(( t2 - t1 )) '/requests in/ { printf "%.1f %.1f %.0f\n", s / hz * 1e6 / $1, w * 1e6 / $1, 100 * idle / all }' "$out" >"$out.cpu"
}
# "SERVER_US WRK_US IDLE%" averaged over the rounds' OUT.N.cpu files.
cpu_mean() {
    cat "$work/$1".*.cpu | awk '{ s += $1; w += $2; i += $3 } END { printf "%.1f µs + wrk %.1f µs, the machine %.0f%% idle", s / NR, w / NR, i / NR }'
}

# 1. Ingest ------------------------------------------------------------------------------
SHOPIFY_SECRET=peers-shopify-app-secret
start "$work/hyper.log" "$root/target/release/bare_hyper" 127.0.0.1:0
hyper_url=$url
hyper_pid=${pids[-1]}
cat >"$work/lockstep.toml" <<EOF
[server]
listen = "127.0.0.1:0"
data_dir = "$work/data"
shards = 2

# Its webhooks only: no SKU of the run is in a catalog, so nothing is pushed to it.
[[channels]]
name = "shop"
kind = "shopify"
base_url = "http://127.0.0.1:9"
webhook_secret = "$SHOPIFY_SECRET"
access_token = "shpat_peers"
api_version = "2026-04"
location_id = "1"
EOF
start "$work/lockstep.log" "$root/target/release/lockstep" serve --config "$work/lockstep.toml"
lockstep_url=$url
lockstep_pid=${pids[-1]}

hooks_run() {  # hooks_run OUT URL FIRST_ID
    "$root/target/release/signed_hooks" "$2" --secret "$SHOPIFY_SECRET" \
        --connections "$CONNECTIONS" --duration "$DURATION" --skus "$SKUS" --threads 2 \
        --first-id "$3" >"$1"
}
wrk_run "$work/hyper.wrk" "$hyper_url/" benches/peers/post.lua
# The one-event rounds: the same requests to each (wrk's Lua per request costs CPU here
# too), each round's keys and ids new to lockstep.
for r in $(seq 1 "$ROUNDS"); do
    cpu_run "$hyper_pid" "$work/hyper-events.$r" "$hyper_url/v1/events" benches/peers/events.lua EVENTS=1 SKUS="$SKUS" ROUND="$r"
    cpu_run "$lockstep_pid" "$work/single.$r" "$lockstep_url/v1/events" benches/peers/events.lua EVENTS=1 SKUS="$SKUS" ROUND="$r"
    hooks_run "$work/hyper-hooks.$r" "$hyper_url/webhooks/shop" $((r * 100000000))
    hooks_run "$work/hooks.$r" "$lockstep_url/webhooks/shop" $((r * 100000000))
done
wrk_run "$work/batched.wrk" "$lockstep_url/v1/events" benches/peers/events.lua EVENTS="$BATCH" SKUS="$SKUS"
wrk_run "$work/hot.wrk" "$lockstep_url/v1/events" benches/peers/events.lua EVENTS=1 HOT=1

# The median round of `$1` (lockstep's outputs "$work/$1.N") against `$2` (bare
# hyper's): "LOCKSTEP PEER RATIO" of it, then every round's ratio, lowest first.
median_round() {
    local r ours peer rounds=()
    for r in $(seq 1 "$ROUNDS"); do
        ours=$(rps "$work/$1.$r"); peer=$(rps "$work/$2.$r")
        rounds+=("$(ratio "$ours" "$peer") $ours $peer")
    done
    printf '%s\n' "${rounds[@]}" | sort -n | awk -v n="$ROUNDS" '
        { line[NR] = $0; all = all (NR > 1 ? ", " : "") $1 }
        END { split(line[int((n + 1) / 2)], m, " "); print m[2], m[3], m[1], all }'
}
read -r single hyper_events single_ratio single_rounds < <(median_round single hyper-events)
read -r hooks hyper_hooks hooks_ratio hooks_rounds < <(median_round hooks hyper-hooks)
hyper=$(rps "$work/hyper.wrk")
batched=$(product "$(rps "$work/batched.wrk")" "$BATCH")
hot=$(rps "$work/hot.wrk")
for f in "$work"/single.* "$work"/batched.wrk "$work"/hot.wrk "$work"/hooks.*; do
    if grep -q "Non-2" "$f"; then
        echo "note: lockstep answered otherwise than 200 in $(basename "$f"): $(grep Non-2 "$f")"
    fi
done

# 2. PostgreSQL --------------------------------------------------------------------------
mkdir -p "$work/pg"
chown -R postgres "$work" 2>/dev/null || true
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
as_pg "'$pg_bin/initdb' -D '$work/pg' -A trust -U postgres" >/dev/null
as_pg "'$pg_bin/pg_ctl' -D '$work/pg' -o \"-p 55432 -k '$work' -c listen_addresses=127.0.0.1\" -w -l '$work/pg.log' start" >/dev/null
psql() { command psql -h 127.0.0.1 -p 55432 -U postgres -q "$@"; }
psql -c "CREATE TABLE stock (sku int PRIMARY KEY, qty bigint NOT NULL)" \
     -c "INSERT INTO stock SELECT s, 1000000000 FROM generate_series(1, $SKUS) s" \
     -c "VACUUM ANALYZE stock"
pgbench() { command pgbench -h 127.0.0.1 -p 55432 -U postgres -n -c "$CONNECTIONS" -j 2 -T "$DURATION" "$@" postgres; }
pg_random=$(pgbench -D skus="$SKUS" -f benches/peers/stock.sql | awk '/^tps/ {print $3}')
pg_hot=$(pgbench -f benches/peers/hot.sql | awk '/^tps/ {print $3}')

cores=$(nproc)
echo
echo "lockstep and its peers on this machine ($cores cores), ${DURATION}s each, $CONNECTIONS connections"
printf '%-58s %12s\n' "bare hyper server answering 200, 1 KiB POSTs" "$hyper req/s"
printf '%-58s %12s\n' "bare hyper server answering 200, one-event requests" "$hyper_events req/s"
printf '%-58s %12s   %s of bare hyper given the same requests (rounds: %s)\n' "lockstep durable ingest, 1 event per request" "$single req/s" "$single_ratio" "$single_rounds"
printf '%-58s %s\n' "  CPU per one-event request, bare hyper" "$(cpu_mean hyper-events)"
printf '%-58s %s\n' "  CPU per one-event request, lockstep" "$(cpu_mean single)"
printf '%-58s %12s\n' "bare hyper server answering 200, signed Shopify webhooks" "$hyper_hooks req/s"
printf '%-58s %12s   %s of bare hyper given the same requests (rounds: %s)\n' "lockstep, signed Shopify webhooks, 1 event per request" "$hooks req/s" "$hooks_ratio" "$hooks_rounds"
printf '%-58s %12s   %s of bare hyper (events/s over its req/s)\n' "lockstep durable ingest, $BATCH events per request" "$batched events/s" "$(ratio "$batched" "$hyper")"
printf '%-58s %12s\n' "PostgreSQL row-locked UPDATE, random SKUs (pgbench)" "$pg_random tps"
printf '%-58s %12s\n' "PostgreSQL row-locked UPDATE, one hot SKU (pgbench)" "$pg_hot tps"
printf '%-58s %12s   %s x PostgreSQL on the hot SKU\n' "lockstep, one hot SKU, 1 order per request" "$hot req/s" "$(ratio "$hot" "$pg_hot")"
