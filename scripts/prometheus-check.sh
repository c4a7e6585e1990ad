#!/usr/bin/env bash
# End-to-end check of the monitoring setup against a real Prometheus (no
# mocks): start two seedswarm nodes on loopback with --http, check the
# Grafana dashboard (configs/grafana/seedswarm.json) against their /metrics,
# run scripts/prometheus.sh on them and query Prometheus's HTTP API back
# until every node's seedswarm_updates_applied is > 0 and up == 1, and let
# Prometheus parse every PromQL expression of the dashboard.
#
#   scripts/prometheus-check.sh
#   SEEDSWARM_REQUIRE_PROMETHEUS=1 scripts/prometheus-check.sh   # no SKIP
#
# Prints one PASS, FAIL or SKIP line at the end. SKIP (exit 0) when
# Prometheus is not installed and cannot be (not root or no apt-get, or the
# install fails); with SEEDSWARM_REQUIRE_PROMETHEUS=1 that is a FAIL. The
# dashboard checks against /metrics run either way. No fixed ports (nodes
# bind :0, Prometheus gets a free port); every process it starts is stopped
# on exit; its temporary directory is removed unless the check failed
# (or KEEP=1).
#
# Environment: SEEDSWARM_BIN (skip the cargo build), CONFIG (default
# configs/demo.toml), UPDATES (own updates per node, default 100),
# PROM_CHECK_TIMEOUT (seconds to wait for the series, default 60),
# SEEDSWARM_REQUIRE_PROMETHEUS, KEEP.
set -euo pipefail
cd "$(dirname "$0")/.."

t_start=$SECONDS
CONFIG=${CONFIG:-configs/demo.toml}
UPDATES=${UPDATES:-100}
PROM_CHECK_TIMEOUT=${PROM_CHECK_TIMEOUT:-60}
REQUIRE=${SEEDSWARM_REQUIRE_PROMETHEUS:-0}
DASHBOARD=configs/grafana/seedswarm.json
NODES=2
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/seedswarm-target}

say() { echo "prometheus-check: $*"; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/seedswarm-prom-check.XXXXXX")
RUN_DIR=$WORK/swarm
pids=()
prom_sh_pid=""
verdict=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$prom_sh_pid" ]]; then
    # prometheus.sh stops its Prometheus on TERM (its own trap).
    kill -TERM "$prom_sh_pid" 2>/dev/null || true
    wait "$prom_sh_pid" 2>/dev/null || true
  fi
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [[ -z "$verdict" ]]; then
    verdict="FAIL: interrupted or unexpected error (exit $rc)"
    (( rc == 0 )) && rc=1
  fi
  if (( rc != 0 )) || [[ "${KEEP:-0}" == 1 ]]; then
    say "logs kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  say "$verdict"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { verdict="FAIL: $*"; exit 1; }
skip() {
  if [[ "$REQUIRE" == 1 ]]; then
    fail "$* (SEEDSWARM_REQUIRE_PROMETHEUS=1)"
  fi
  verdict="SKIP: $* (dashboard checked against /metrics only; set SEEDSWARM_REQUIRE_PROMETHEUS=1 to fail instead)"
  exit 0
}

# --- build and start two nodes ---------------------------------------------
if [[ -z "${SEEDSWARM_BIN:-}" ]]; then
  cargo build --quiet --bin seedswarm
  SEEDSWARM_BIN="$CARGO_TARGET_DIR/debug/seedswarm"
fi
[[ -x "$SEEDSWARM_BIN" ]] || fail "no seedswarm binary at $SEEDSWARM_BIN"
t_built=$SECONDS
say "binary $SEEDSWARM_BIN (build step $((t_built - t_start))s)"

start_node() {
  local i=$1; shift
  local dir="$RUN_DIR/node-$i"
  mkdir -p "$dir"
  "$SEEDSWARM_BIN" node --config "$CONFIG" --data-dir "$dir" \
    --listen /ip4/127.0.0.1/tcp/0 --no-mdns --min-peers $((NODES - 1)) \
    --max-updates "$UPDATES" --serve --http 127.0.0.1:0 \
    "$@" >"$dir/stdout.log" 2>"$dir/stderr.log" &
  pids+=($!)
}

wait_line() { # i pattern -> the first match in node-i/stdout.log
  local i=$1 pattern=$2 deadline=$((SECONDS + 30)) line
  while (( SECONDS < deadline )); do
    line=$(grep -m1 -o "$pattern" "$RUN_DIR/node-$i/stdout.log" 2>/dev/null || true)
    if [[ -n "$line" ]]; then echo "$line"; return 0; fi
    kill -0 "${pids[$i]}" 2>/dev/null || break
    sleep 0.1
  done
  return 1
}

start_node 0
boot=$(wait_line 0 'listening on /ip4/127.0.0.1/tcp/[0-9]*/p2p/[A-Za-z0-9]*') \
  || fail "node-0 did not start; see $RUN_DIR/node-0/stderr.log"
boot=${boot#listening on }
for i in $(seq 1 $((NODES - 1))); do start_node "$i" --bootstrap "$boot"; done
node_urls=()
for i in $(seq 0 $((NODES - 1))); do
  m=$(wait_line "$i" 'metrics http://[0-9.:]*/metrics') \
    || fail "node-$i serves no /metrics; see $RUN_DIR/node-$i/stderr.log"
  m=${m#metrics }
  # The same record scripts/swarm.sh keeps: RUN_DIR/node-<i>/url.
  echo "${m%/metrics}" >"$RUN_DIR/node-$i/url"
  node_urls+=("$m")
done
say "$NODES nodes up: ${node_urls[*]}"

# --- helpers (python3: HTTP, JSON, PromQL names) ----------------------------
cat >"$WORK/check.py" <<'PY'
import json, re, sys, time, urllib.parse, urllib.request

def get(url, timeout=3):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()

def samples(text):
    """{metric name: [(labels, value)]} from Prometheus text."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)', line)
        if m:
            out.setdefault(m.group(1), []).append((m.group(2) or "", float(m.group(3))))
    return out

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "offset", "bool", "inf", "nan", "Inf", "NaN"}

def metric_names(expr):
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # string literals
    s = re.sub(r'\{[^}]*\}', '', s)                        # label matchers
    s = re.sub(r'\[[^\]]*\]', '', s)                       # range selectors
    s = re.sub(r'\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)', '', s)
    s = re.sub(r'\$\{?\w+\}?', '', s)                      # Grafana variables
    names = set()
    for m in re.finditer(r'(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*', s):
        if s[m.end():].lstrip().startswith("("):            # function / aggregation
            continue
        if m.group(0) not in KEYWORDS:
            names.add(m.group(0))
    return names

def exprs(dash):
    for p in dash["panels"]:
        for t in p.get("targets", []):
            yield p["title"], t["expr"]
        for q in p.get("panels", []):                      # collapsed rows
            for t in q.get("targets", []):
                yield q["title"], t["expr"]

def total(text, name):
    return sum(v for _, v in samples(text).get(name, []))

def cmd_names(timeout, out, *urls):
    """Wait until every node has a gossipsub mesh and received foreign
    updates, then record the names of all series over a few more scrapes."""
    deadline = time.time() + float(timeout)
    ok, texts = False, []
    while time.time() < deadline:
        try:
            texts = [get(u) for u in urls]
        except OSError:
            texts = []
        ok = len(texts) == len(urls) and all(
            total(t, "seedswarm_updates_received_total") > 0
            and total(t, "seedswarm_mesh_peers") > 0 for t in texts)
        if ok:
            break
        time.sleep(0.5)
    if not ok:
        sys.exit("nodes did not form a mesh and exchange updates within %ss" % timeout)
    names = set()
    for round in range(4):
        if round:
            time.sleep(0.5)
            texts = [get(u) for u in urls]
        for i, t in enumerate(texts):
            names |= set(samples(t))
            open("%s.%d" % (out, i), "w").write(t)
    open(out, "w").write("\n".join(sorted(names)) + "\n")
    print("%d metric names in the nodes' /metrics" % len(names))

# Series a node registers but only prints once a labelled sample exists
# (prometheus-client omits empty families), checked against the source
# instead; and series Prometheus itself adds to every target.
REGISTERED_EMPTY = {"seedswarm_messages_rejected_total": ("src/obs/metrics.rs", '"messages_rejected"')}
PROMETHEUS_OWN = {"up"}
REQUIRED = ["seedswarm_loss", "seedswarm_accuracy", "seedswarm_updates_applied",
            "seedswarm_updates_received_total", "seedswarm_apply_backlog",
            "seedswarm_version_vector_lag", "seedswarm_messages_rejected_total",
            "seedswarm_payload_bytes_total", "seedswarm_wire_bytes_total", "seedswarm_peers",
            "seedswarm_mesh_peers", "seedswarm_step_seconds_bucket",
            "seedswarm_forward_seconds_bucket", "seedswarm_apply_seconds_bucket",
            "libp2p_gossipsub_messages_total", "libp2p_swarm_connections_established_total"]

def cmd_dashboard(path, names_file):
    dash = json.load(open(path))
    have = set(open(names_file).read().split())
    errors = []
    ds = [v for v in dash["templating"]["list"] if v["name"] == "DS_PROMETHEUS"]
    if not ds or ds[0]["type"] != "datasource" or ds[0]["query"] != "prometheus":
        errors.append("no datasource variable DS_PROMETHEUS of type prometheus")
    used, n_expr, n_panels = set(), 0, 0
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        n_panels += 1
        if p.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
            errors.append("panel %r: datasource is not ${DS_PROMETHEUS}" % p["title"])
        if not p.get("targets"):
            errors.append("panel %r has no queries" % p["title"])
        for t in p.get("targets", []):
            if t.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
                errors.append("panel %r: a query's datasource is not ${DS_PROMETHEUS}" % p["title"])
    notes = []
    for title, e in exprs(dash):
        n_expr += 1
        found = metric_names(e)
        if not found:
            errors.append("panel %r: no metric name in %s" % (title, e))
        for n in sorted(found):
            used.add(n)
            if n in have or n in PROMETHEUS_OWN:
                continue
            if n in REGISTERED_EMPTY:
                src, needle = REGISTERED_EMPTY[n]
                if needle in open(src).read():
                    notes.append(n)
                    continue
            errors.append("panel %r: %s is not in any node's /metrics" % (title, n))
    for n in REQUIRED:
        if n not in used:
            errors.append("dashboard has no panel on %s" % n)
    for n in sorted(set(notes)):
        print("note: %s is registered (%s) but has no sample until its first label set"
              % (n, REGISTERED_EMPTY[n][0]))
    if errors:
        print("\n".join(errors))
        sys.exit(1)
    print("dashboard %s: valid JSON, %d panels, %d expressions, %d metric names, all in /metrics: %s"
          % (path, n_panels, n_expr, len(used), " ".join(sorted(used))))

def query(base, q):
    url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
    try:
        return json.loads(get(url))
    except urllib.error.HTTPError as e:            # 400 on a bad expression
        return json.loads(e.read().decode())

def cmd_prometheus(base, timeout, dashboard, *nodes):
    deadline = time.time() + float(timeout)
    state = {}
    while True:
        applied, up = {}, {}
        try:
            for r in query(base, "seedswarm_updates_applied")["data"]["result"]:
                applied[r["metric"].get("node")] = float(r["value"][1])
            for r in query(base, 'up{job="seedswarm"}')["data"]["result"]:
                up[r["metric"].get("node")] = float(r["value"][1])
        except (OSError, KeyError, ValueError):
            pass
        state = {n: (applied.get(n), up.get(n)) for n in nodes}
        if all(a is not None and a > 0 and u == 1 for a, u in state.values()):
            break
        if time.time() > deadline:
            sys.exit("after %ss: %s" % (timeout, ", ".join(
                "%s applied=%s up=%s" % (n, a, u) for n, (a, u) in state.items())))
        time.sleep(1)
    print("series: " + ", ".join("%s applied=%g up=%g" % (n, a, u) for n, (a, u) in state.items()))
    # The dashboard's node variable (label_values(seedswarm_updates_applied, node)).
    lv = json.loads(get(base + "/api/v1/label/node/values?" + urllib.parse.urlencode(
        {"match[]": "seedswarm_updates_applied"})))["data"]
    if sorted(lv) != sorted(nodes):
        sys.exit("label values of node: %s, expected %s" % (lv, list(nodes)))
    # Every dashboard expression, with Grafana's variables filled in, must parse
    # and evaluate; count how many already return data.
    dash = json.load(open(dashboard))
    bad, with_data, total = [], 0, 0
    for title, e in exprs(dash):
        total += 1
        q = e.replace("$__rate_interval", "30s").replace("$__range", "5m").replace("$node", ".*")
        r = query(base, q)
        if r.get("status") != "success":
            bad.append("%s: %s: %s" % (title, q, r.get("error")))
        elif r["data"]["result"]:
            with_data += 1
    if bad:
        sys.exit("Prometheus rejects dashboard expressions:\n" + "\n".join(bad))
    print("Prometheus evaluates all %d dashboard expressions (%d with data already)" % (total, with_data))

if __name__ == "__main__":
    {"names": cmd_names, "dashboard": cmd_dashboard, "prometheus": cmd_prometheus}[sys.argv[1]](*sys.argv[2:])
PY

# --- dashboard against the real /metrics ------------------------------------
python3 "$WORK/check.py" names "$PROM_CHECK_TIMEOUT" "$WORK/names" "${node_urls[@]}" \
  || fail "nodes did not exchange updates; see $RUN_DIR/node-*/stderr.log"
python3 "$WORK/check.py" dashboard "$DASHBOARD" "$WORK/names" \
  || fail "dashboard $DASHBOARD does not match the nodes' /metrics"

# --- Prometheus ---------------------------------------------------------------
prom_bin=${PROMETHEUS_BIN:-$(command -v prometheus || true)}
if [[ -z "$prom_bin" ]] && ! { [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; }; then
  skip "prometheus is not installed and cannot be installed here (not root or no apt-get)"
fi
PROM_DIR="$WORK/prometheus" scripts/prometheus.sh "$RUN_DIR" >"$WORK/prometheus.out" 2>&1 &
prom_sh_pid=$!
# Installing the package may take a while; starting an installed one does not.
start_deadline=$((SECONDS + (${#prom_bin} > 0 ? 45 : 240)))
until [[ -s "$WORK/prometheus/url" ]]; do
  if ! kill -0 "$prom_sh_pid" 2>/dev/null; then
    set +e; wait "$prom_sh_pid"; rc=$?; set -e
    prom_sh_pid=""
    sed 's/^/  | /' "$WORK/prometheus.out"
    (( rc == 3 )) && skip "no usable prometheus: $(tail -n1 "$WORK/prometheus.out")"
    fail "scripts/prometheus.sh exited with status $rc"
  fi
  (( SECONDS < start_deadline )) || { sed 's/^/  | /' "$WORK/prometheus.out"; fail "Prometheus not ready in time"; }
  sleep 0.2
done
prom_url=$(cat "$WORK/prometheus/url")
sed 's/^/  | /' "$WORK/prometheus.out"
version=$(grep -m1 -o '^prometheus, version [^ ;]*' "$WORK/prometheus.out" || echo prometheus)

labels=()
for i in $(seq 0 $((NODES - 1))); do labels+=("node-$i"); done
out=$(python3 "$WORK/check.py" prometheus "$prom_url" "$PROM_CHECK_TIMEOUT" "$DASHBOARD" "${labels[@]}" 2>&1) \
  || { echo "$out"; fail "Prometheus at $prom_url: series missing or expressions rejected"; }
echo "$out"
verdict="PASS: $version scraped $NODES nodes via scripts/prometheus.sh ($(echo "$out" | head -n1)); dashboard OK; $((SECONDS - t_built))s after the build, $((SECONDS - t_start))s in all"
exit 0
