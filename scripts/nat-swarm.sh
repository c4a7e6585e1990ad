#!/usr/bin/env bash
# Nodes behind different NATs training together. Network namespaces form
# an "internet" segment (a bridge) with a public relay/bootstrap node, and
# HOMES home networks, each behind its own NAT router namespace (nftables
# masquerade; unsolicited inbound traffic is dropped, as a home router
# does). Home nodes know only the bootstrap address. They find out they are
# private (AutoNAT v2), reserve a slot at the relay (circuit relay v2),
# reach each other through it and hole-punch (DCUtR) to direct connections.
# Ends with the verdict of scripts/swarm.sh (equal digests, every node
# settled, accuracy) and, per pair of home nodes, whether the final
# connection was direct (hole punched) or relayed. Needs root and nft; all
# namespaces are removed on exit. Nothing is added to the host's own
# namespace.
#
#   sudo scripts/nat-swarm.sh
#   HOMES=3 UPDATES=3000 sudo -E scripts/nat-swarm.sh
#   RATE=100mbit sudo -E scripts/nat-swarm.sh   # tbf on every router's uplink
#   HARD_NAT=1 sudo -E scripts/nat-swarm.sh      # symmetric NATs (random ports): no hole
#                                                # punch can work; the swarm trains relayed
#
# Addresses: internet 10.99.0.0/24 (relay 10.99.0.1, router h 10.99.0.(10+h));
# home h 192.168.h.0/24 (router .1, node .2). Exit 2: not root, or no nft.
set -euo pipefail
cd "$(dirname "$0")/.."

HOMES=${HOMES:-2}
UPDATES=${UPDATES:-20000}
CONFIG=${CONFIG:-configs/demo.toml}
TARGET_ACC=${TARGET_ACC:-0.85}
RUN_DIR=${RUN_DIR:-runs/nat-$(date +%Y%m%d-%H%M%S)}
PREFIX=${PREFIX:-ssn$$}
RATE=${RATE:-}
HARD_NAT=${HARD_NAT:-0}
MASQ=masquerade
[[ "$HARD_NAT" == 1 ]] && MASQ="masquerade fully-random"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/seedswarm-target}

if [[ $(id -u) -ne 0 ]]; then
  echo "nat-swarm.sh needs root (ip netns, nft): skipped" >&2
  exit 2
fi
if ! command -v nft >/dev/null; then
  echo "nat-swarm.sh needs nftables (apt-get install nftables): skipped" >&2
  exit 2
fi
if [[ -z "${SEEDSWARM_BIN:-}" ]]; then
  cargo build --quiet --bin seedswarm
  SEEDSWARM_BIN="$CARGO_TARGET_DIR/debug/seedswarm"
fi
SEEDSWARM_BIN=$(realpath "$SEEDSWARM_BIN")
mkdir -p "$RUN_DIR"
RUN_DIR=$(realpath "$RUN_DIR")
INET="$PREFIX-inet"
pids=()
namespaces=("$INET")

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

newns() {
  ip netns add "$1"
  namespaces+=("$1")
  ip -n "$1" link set lo up
}

# The internet: one bridge.
newns "$INET"
ip -n "$INET" link add br0 type bridge
ip -n "$INET" link set br0 up

# Plug namespace $1 into the internet bridge as eth0 with address $2.
uplink() {
  local ns=$1 addr=$2
  local port="u${ns##*-}$PREFIX"
  port=${port:0:15}
  ip link add "$port" type veth peer name eth0 netns "$ns"
  ip link set "$port" netns "$INET"
  ip -n "$INET" link set "$port" master br0 up
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
}

RELAY="$PREFIX-relay"
newns "$RELAY"
uplink "$RELAY" 10.99.0.1

for h in $(seq 1 "$HOMES"); do
  router="$PREFIX-r$h" home="$PREFIX-h$h"
  newns "$router"
  newns "$home"
  uplink "$router" "10.99.0.$((10 + h))"
  ip link add lan0 netns "$router" type veth peer name eth0 netns "$home"
  ip -n "$router" addr add "192.168.$h.1/24" dev lan0
  ip -n "$router" link set lan0 up
  ip -n "$home" addr add "192.168.$h.2/24" dev eth0
  ip -n "$home" link set eth0 up
  ip -n "$home" route add default via "192.168.$h.1"
  ip netns exec "$router" sysctl -qw net.ipv4.ip_forward=1
  # A home router: the LAN leaves masqueraded behind the router's public
  # address; from outside only replies to what the LAN sent get in.
  ip netns exec "$router" nft -f - <<EOF
table ip nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "eth0" $MASQ
  }
}
table inet filter {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan0" oifname "eth0" accept
  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "eth0" ct state new drop
  }
}
EOF
  if [[ -n "$RATE" ]]; then
    ip netns exec "$router" tc qdisc add dev eth0 root tbf rate "$RATE" burst 256kb latency 50ms
  fi
done
echo "nat swarm: relay 10.99.0.1 and $HOMES home network(s) behind ${MASQ#masquerade} NAT routers${RATE:+ (uplinks $RATE)}, $UPDATES updates each, logs in $RUN_DIR"

N=$((HOMES + 1))
start_node() {
  local ns=$1 i=$2; shift 2
  local dir="$RUN_DIR/node-$i"
  mkdir -p "$dir"
  ip netns exec "$ns" env RUST_LOG="${RUST_LOG:-info}" "$SEEDSWARM_BIN" node --config "$CONFIG" --data-dir "$dir" \
    --listen /ip4/0.0.0.0/tcp/4001 --listen /ip4/0.0.0.0/udp/4001/quic-v1 \
    --no-mdns --min-peers $((N - 1)) --max-updates "$UPDATES" \
    --summary "$dir/summary.json" "$@" >"$dir/stdout.log" 2>"$dir/stderr.log" &
  pids+=($!)
}

# Node 0: public, the bootstrap node and relay (it trains too).
start_node "$RELAY" 0 --relay-server --external-address /ip4/10.99.0.1/tcp/4001 \
  --external-address /ip4/10.99.0.1/udp/4001/quic-v1
peer=""
for _ in $(seq 1 100); do
  peer=$(grep -m1 -o 'peer id [A-Za-z0-9]*' "$RUN_DIR/node-0/stdout.log" 2>/dev/null | sed 's/^peer id //' || true)
  [[ -n "$peer" ]] && break
  sleep 0.1
done
[[ -n "$peer" ]] || { echo "the relay node did not start; see $RUN_DIR/node-0/stderr.log" >&2; exit 1; }
for h in $(seq 1 "$HOMES"); do
  start_node "$PREFIX-h$h" "$h" --bootstrap "/ip4/10.99.0.1/udp/4001/quic-v1/p2p/$peer" \
    --bootstrap "/ip4/10.99.0.1/tcp/4001/p2p/$peer" --http 127.0.0.1:9100
done
for i in $(seq 0 $((N - 1))); do echo "" >"$RUN_DIR/node-$i/url"; done

# What `seedswarm status` tells the user of home 1 once it knows it is
# private (polled from inside its namespace while it runs).
(
  for _ in $(seq 1 120); do
    out=$(ip netns exec "$PREFIX-h1" "$SEEDSWARM_BIN" status http://127.0.0.1:9100 2>/dev/null || true)
    if grep -q "private" <<<"$out"; then
      printf '%s\n' "$out" >"$RUN_DIR/status-home1.txt"
      break
    fi
    sleep 0.5
  done
) &
status_pid=$!
python3 scripts/swarm_table.py "$RUN_DIR" "$N" "${pids[@]}" || true
wait "$status_pid" || true
if [[ -s "$RUN_DIR/status-home1.txt" ]]; then
  echo "seedswarm status, on home 1:"
  cat "$RUN_DIR/status-home1.txt"
else
  echo "home 1 did not learn it is private while it ran (AutoNAT needs ~10 s)"
fi
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
pids=()
python3 scripts/swarm_table.py --verdict "$RUN_DIR" "$N" "$TARGET_ACC" || failed=1

# Per pair: how the home nodes were connected at the end.
python3 - "$RUN_DIR" "$HOMES" <<'PY' || failed=1
import json, sys
run, homes = sys.argv[1], int(sys.argv[2])
st = [json.load(open(f"{run}/node-{i}/status.json")) for i in range(homes + 1)]
ids = [s["peer_id"] for s in st]
out = {"pairs": [], "reachability": {}}
for i in range(homes + 1):
    r = st[i].get("reachability", {})
    out["reachability"][f"node-{i}"] = r.get("state")
    print(f"node-{i} ({'relay' if i == 0 else 'home %d' % i}): {r.get('state')}, "
          f"hole punches {r.get('hole_punched', 0)} ok / {r.get('hole_punch_failed', 0)} failed"
          + (f"; advice: {r['advice']}" if r.get("advice") else ""))
bad = 0
for a in range(1, homes + 1):
    for b in range(a + 1, homes + 1):
        la = st[a].get("reachability", {}).get("links", {}).get(ids[b], "never connected")
        lb = st[b].get("reachability", {}).get("links", {}).get(ids[a], "never connected")
        print(f"home {a} <-> home {b}: {la} (as home {b} saw it: {lb})")
        out["pairs"].append({"a": a, "b": b, "link": la, "link_seen_by_b": lb})
        bad += la == "never connected"
json.dump(out, open(f"{run}/nat.json", "w"), indent=1)
sys.exit(1 if bad else 0)
PY
exit $failed
