#!/usr/bin/env python3
"""Live table and final verdict for scripts/swarm.sh (reads each node's
status.json while running and summary.json at the end)."""
import json
import os
import sys
import time
import urllib.request


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def status(run_dir, i):
    """The node's live /status, or its last status.json once it has exited."""
    try:
        with open(f"{run_dir}/node-{i}/url") as f:
            url = f.read().strip()
        if url:
            with urllib.request.urlopen(url + "/status", timeout=1) as r:
                return json.load(r)
    except (OSError, ValueError):
        pass
    return load(f"{run_dir}/node-{i}/status.json") or {}


def table(run_dir, n):
    rows = []
    groups = {}
    for i in range(n):
        s = status(run_dir, i)
        if s.get("digest"):
            key = json.dumps(s.get("version_vector", {}), sort_keys=True)
            groups.setdefault(key, set()).add(s["digest"])
        acc = s.get("accuracy")
        rows.append(
            f"node-{i}  peers {s.get('peers', '-'):>2}  own {s.get('own_updates', 0):>6}  "
            f"applied {s.get('updates_applied', 0):>7}  backlog {s.get('backlog', 0):>5}  "
            f"loss {s.get('loss') if s.get('loss') is None else round(s['loss'], 4)!s:>7}  "
            f"acc {('%.1f%%' % (100 * acc)) if acc is not None else '-':>6}  "
            f"digest {(s.get('digest') or '-')[:12]}"
            + ("  first-order" if s.get("mode") == "first-order" else "")
        )
    bad = sum(1 for d in groups.values() if len(d) > 1)
    rows.append(
        f"{len(groups)} distinct version vector(s); "
        + ("digests agree at equal version vectors" if bad == 0 else f"{bad} group(s) DISAGREE")
    )
    return rows


def live(run_dir, n, pids):
    tty = sys.stdout.isatty()
    last = 0.0
    while any(alive(p) for p in pids):
        rows = table(run_dir, n)
        if tty:
            sys.stdout.write("\x1b[2J\x1b[H" + "\n".join(rows) + "\n")
            sys.stdout.flush()
        elif time.time() - last > 5:
            print("\n".join(rows), flush=True)
            last = time.time()
        # Polling every node's /status costs CPU the nodes need: slower
        # for big swarms.
        time.sleep(max(0.5, n / 16))
    print("\n".join(table(run_dir, n)))


def verdict(run_dir, n, target):
    sums = [load(f"{run_dir}/node-{i}/summary.json") for i in range(n)]
    missing = [i for i, s in enumerate(sums) if s is None]
    if missing:
        print(f"VERDICT: FAIL - nodes {missing} wrote no summary (see their stderr.log)")
        return 1
    digests = {s["digest"] for s in sums}
    vvs = {json.dumps(s["version_vector"], sort_keys=True) for s in sums}
    accs = [s["accuracy"] for s in sums]
    wire = sum(s["wire_bytes_in_per_update"] for s in sums) / n
    ok_bits = len(digests) == 1 and len(vvs) == 1
    ok_acc = min(accs) >= target
    settled = sum(1 for s in sums if s["settled"])
    ok_settled = settled == n
    rss = [s.get("peak_rss_mib", float("nan")) for s in sums]
    wall = max(s["wall_seconds"] for s in sums)
    print(
        f"updates applied per node {sums[0]['updates_applied']}, accuracy "
        f"{min(accs):.3f}..{max(accs):.3f}, {wire:.1f} wire bytes in per update, "
        f"mean backlog {sum(s['mean_backlog'] for s in sums) / n:.1f}, "
        f"settled {settled} of {n}, slowest node {wall:.1f} s, "
        f"peak RSS per node {sum(rss) / n:.1f} MiB (max {max(rss):.1f})"
    )
    for i, s in enumerate(sums):
        if not s["settled"]:
            for w in s.get("waiting_for", []) + s.get("missing", []):
                print(f"node-{i} not settled: {w}")
    ok = ok_bits and ok_acc and ok_settled
    with open(f"{run_dir}/swarm.json", "w") as f:
        json.dump(
            {
                "nodes": n,
                "updates_applied": sums[0]["updates_applied"],
                "accuracy_min": min(accs),
                "accuracy_max": max(accs),
                "wire_bytes_in_per_update": wire,
                "settled": settled,
                "wall_seconds": wall,
                "peak_rss_mib_mean": sum(rss) / n,
                "peak_rss_mib_max": max(rss),
                "digests_equal": ok_bits,
                "pass": ok,
            },
            f,
            indent=1,
        )
    print(
        "VERDICT: "
        + ("PASS" if ok else "FAIL")
        + f" - digests {'all equal' if ok_bits else 'DIFFER'} ({next(iter(digests))[:16]}), "
        + f"accuracy {'reached' if ok_acc else 'below'} {target}, "
        + ("every node settled" if ok_settled else f"only {settled} of {n} settled")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1] == "--verdict":
        sys.exit(verdict(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
    live(sys.argv[1], int(sys.argv[2]), [int(p) for p in sys.argv[3:]])
