#!/usr/bin/env bash
# The operator console at 1,000,000 SKUs: lockstep (release) on a temp data directory,
# loopback (no token: the console is served without sign-in there), SKUs counted through
# the native API, then each page timed with curl, five times each, the median printed:
# the overview (first load), the first page of all SKUs, prefix and substring searches,
# a SKU's page.
#
# Then, when Debian's chromium and chromium-driver are there, the same pages loaded in
# headless Chromium over WebDriver (plain HTTP to chromedriver from Python), five times
# each, the median of the navigation's duration (request to the load event: the page,
# its stylesheet and script, parsed and laid out; the overview's live stream opens
# after, and is not waited for).
#
#   bash benches/console.sh            # SKUS=1000000 by default
set -euo pipefail

SKUS=${SKUS:-1000000}
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/lockstep-console.XXXXXX)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "building (release)..."
cargo build --release -q
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf '[server]\nlisten = "127.0.0.1:%s"\ndata_dir = "%s/data"\n' "$port" "$work" > "$work/lockstep.toml"
./target/release/lockstep serve --config "$work/lockstep.toml" > "$work/log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q listening "$work/log" && break; sleep 0.1; done
base="http://127.0.0.1:$port"

echo "counting $SKUS SKUs..."
python3 - "$base" "$SKUS" <<'PY'
import http.client, json, sys, threading
base, skus = sys.argv[1], int(sys.argv[2])
host, port = base[len("http://"):].split(":")
batches = [range(i, min(i + 1000, skus)) for i in range(0, skus, 1000)]
def work(part):
    conn = http.client.HTTPConnection(host, int(port))
    for batch in part:
        events = [{"sku": f"SKU-{i:07d}", "kind": "counted", "qty": 10 + i % 90,
                   "idempotency_key": f"load-{i}"} for i in batch]
        conn.request("POST", "/v1/events", json.dumps({"events": events}),
                     {"content-type": "application/json"})
        r = conn.getresponse(); r.read()
        assert r.status == 200, r.status
threads = [threading.Thread(target=work, args=(batches[k::4],)) for k in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
PY

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_page() {  # time_page NAME PATH
    local times
    times=$(for _ in 1 2 3 4 5; do curl -s -o /dev/null -w '%{time_total}\n' "$base$2"; done | median)
    printf '%-44s %8.1f ms\n' "$1" "$(awk -v t="$times" 'BEGIN {print t * 1000}')"
}
echo
echo "the console at $SKUS SKUs (median of 5, curl over loopback)"
time_page "overview (first load)" "/console"
time_page "SKUs, first page (50)" "/console/skus"
time_page "SKUs starting with SKU-05 (first 50)" "/console/skus?q=SKU-05"
time_page "SKUs starting with SKU-0999999 (one)" "/console/skus?q=SKU-0999999"
time_page "a SKU's page (stock, channels, audit)" "/console/skus/SKU-0500000"
time_page "SKUs containing 0500 (first 50 of 1,299)" "/console/skus?match=contains&q=0500"
time_page "SKUs containing sku-09999 (in either case)" "/console/skus?match=contains&q=sku-09999"
time_page "SKUs containing 9999999 (one)" "/console/skus?match=contains&q=9999999"
time_page "SKUs containing zzz (none)" "/console/skus?match=contains&q=zzz"

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    driver_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    /usr/bin/chromedriver --port="$driver_port" > /dev/null 2>&1 &
    driver=$!
    trap 'kill $driver 2>/dev/null || true; cleanup' EXIT
    for _ in $(seq 1 50); do curl -s "http://127.0.0.1:$driver_port/status" > /dev/null && break; sleep 0.1; done
    echo
    echo "the same pages in headless Chromium (median of 5 navigations, request to load event)"
    python3 - "$base" "$driver_port" <<'PY'
import json, statistics, sys, urllib.request
base, port = sys.argv[1], sys.argv[2]
def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(request))["value"]
session = call("POST", "/session", {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
    "binary": "/usr/bin/chromium",
    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800"]}}}})["sessionId"]
pages = [
    ("overview (first load)", "/console"),
    ("SKUs, first page (50)", "/console/skus"),
    ("SKUs starting with SKU-05 (first 50)", "/console/skus?q=SKU-05"),
    ("SKUs containing 0500 (first 50)", "/console/skus?match=contains&q=0500"),
    ("a SKU's page (stock, channels, audit)", "/console/skus/SKU-0500000"),
]
script = "const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime;"
try:
    for name, path in pages:
        times = []
        for _ in range(5):
            call("POST", f"/session/{session}/url", {"url": base + path})
            times.append(call("POST", f"/session/{session}/execute/sync", {"script": script, "args": []}))
        print(f"{name:<44} {statistics.median(times):8.1f} ms")
finally:
    call("DELETE", f"/session/{session}")
PY
fi
