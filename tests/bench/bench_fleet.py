"""A VPP fleet against a broker cluster it starts: fleet dispatch → every ack, the fleet's
summed response, messages/s through the cluster, a node's loss and the sites' failover, and
the per-site CPU and memory of the node's protocol code.

The sites (hil/fleet/site.py) run the node's real MQTT link, outbox (SQLite on /dev/shm),
command handler and flex builder against simulated physics, ≤ 120 to a process; the
reference aggregator (hil/fleet/aggregator.py) is one MQTT client in this process on the
second and third node; the JetStream consumer behind its QoS 1 subscription has
--consumer-replicas replicas (the sites subscribe at QoS 0 and have none). Steps: start the
cluster and the fleet; wait for every site's flex; dispatch "reduce <target> for 2 h" (one
group message by default, or one command per site with --per-site) and time each site's
first answer; wait for the summed response; count messages for --rate-s seconds; SIGKILL
the node that leads the aggregator's consumer (a third of the sites are on it), time
until every site is connected again and until the aggregator has heard from every site
again without that node; restart it; stop the fleet (outboxes flushed) and
count the msg_ids that never arrived, with when the gaps around them arrived.

Run: python tests/bench/bench_fleet.py --sites 1000 [--cluster 3] [--capacity-mw 1200]
     [--target-mw 1000] [--per-site] [--consumer-replicas 3] [--json F]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import benchlib

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hil.fleet.aggregator import Aggregator  # noqa: E402
from hil.fleet.brokers import NatsCluster  # noqa: E402
from hil.fleet.sim import Fleet  # noqa: E402


def wait(pred, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"bench_fleet: timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--cluster", type=int, default=3)
    ap.add_argument("--capacity-mw", type=float, default=1200.0)
    ap.add_argument("--target-mw", type=float, default=1000.0)
    ap.add_argument("--per-site", action="store_true", help="one command per site, not a group")
    ap.add_argument("--telemetry-s", type=float, default=5.0)
    ap.add_argument("--rate-s", type=float, default=20.0, help="seconds of message counting")
    ap.add_argument("--consumer-replicas", type=int, default=3,
                    help="replicas of the JetStream consumer behind each QoS 1 subscription "
                         "(1: in memory, lost with its node)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    n = a.sites
    root = Path(tempfile.mkdtemp(dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    cluster = NatsCluster(root / "nats", a.cluster, consumer_replicas=a.consumer_replicas)
    cluster.start()
    agg = Aggregator(cluster.hosts[1:] or cluster.hosts)
    fleet = Fleet(n, a.capacity_mw * 1000, cluster.hosts, root / "sites", groups=("fleet",),
                  telemetry_s=a.telemetry_s, flex_s=30.0)
    t_kill, site_node = None, {}
    out: dict = {"sites": n, "cluster": a.cluster, "processes": fleet.processes,
                 "capacity_mw": a.capacity_mw, "target_mw": a.target_mw,
                 "dispatch": "per-site" if a.per_site else "group",
                 "consumer_replicas": a.consumer_replicas}
    try:
        agg.start()
        wait(agg.subscribed.is_set, 30, "the aggregator's SUBACK")
        t0 = time.monotonic()
        fleet.start(300)
        wait(lambda: len(agg.flex) == n, 600, "a flex message from every site")
        out["fleet_up_s"] = round(time.monotonic() - t0, 1)
        out["fleet_flex_up_mw"] = round(agg.fleet_flex()[0]["up_kw"] / 1000, 3)
        target = a.target_mw * 1000
        d = (agg.dispatch("bench-1", target, 7200) if a.per_site
             else agg.dispatch_group("fleet", "bench-1", target, 7200))
        wait(lambda: len(agg.answers(d)) == n, 600, "an answer from every site")
        wait(lambda: agg.report(d)["delivered_kw"] >= 0.99 * target, 600,
             "the summed response")
        out["response_s"] = round(time.monotonic() - d.sent_at, 2)
        rep = agg.report(d)
        out.update({"acked": rep["accepted"] + rep["refused"], "accepted": rep["accepted"],
                    "ack_p50_ms": round(rep["ack_p50_ms"], 1),
                    "ack_p99_ms": round(rep["ack_p99_ms"], 1),
                    "ack_max_ms": round(rep["ack_max_ms"], 1),
                    "delivered_ratio": round(rep["delivered_ratio"], 4)})
        before, c0 = fleet.status(), agg.received
        time.sleep(a.rate_s)
        after, c1 = fleet.status(), agg.received
        out["msgs_per_s"] = round((c1 - c0) / a.rate_s, 1)
        cpu = sum(w["cpu_s"] for w in after) - sum(w["cpu_s"] for w in before)
        out["cpu_ms_per_site_s"] = round(cpu / a.rate_s / n * 1000, 3)
        rss = sum(w["rss_kb"] for w in after)
        out["rss_kb_per_process"] = round(rss / len(after))
        # what a site adds to a process: the same process size, less one site-free worker
        out["threads_per_process"] = round(sum(w["threads"] for w in after) / len(after))
        if a.cluster > 1:
            # the node leading the aggregator's consumer (each node has a third of the sites)
            victim = cluster.node(cluster.consumer_current("pedf/v1/+/+")["cluster"]["leader"])
            site_node = {s: st["broker"] for s, st in fleet.sites().items()}
            on_it = [s for s, b in site_node.items() if b == victim.address]
            out["killed"] = victim.name
            t_kill = time.monotonic()
            victim.kill()
            c_kill = agg.received
            wait(lambda: all(st["connected"] and st["broker"] != victim.address
                             for st in fleet.sites().values()), 900, "every site connected again")
            out["failover_s"] = round(time.monotonic() - t_kill, 1)
            out["sites_moved"] = len(on_it)
            # the platform's view without the node: every site heard from again
            try:
                wait(lambda: len(agg.heard_since(t_kill + 1.0)) == n, 120, "every site")
                out["platform_heard_all_s"] = round(time.monotonic() - t_kill, 1)
            except SystemExit:
                out["platform_heard_all_s"] = None  # not while the node was down
            out["received_while_down"] = agg.received - c_kill
            victim.start()
            cluster.wait_ready(120, [victim])
            out["node_back_s"] = round(time.monotonic() - t_kill, 1)
    finally:
        final = fleet.stop() if fleet._procs else []
        time.sleep(2)
        agg.stop()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    last = {s["site"]: s["last_id"] for w in final for s in w["sites"]}
    # an outbox keeps its rows in msg_id order until their PUBACK: what a site had left
    # at the end is its last `outbox` ids, never acknowledged by the broker
    acked = {s["site"]: s["last_id"] - s["outbox"] for w in final for s in w["sites"]}
    lost = agg.lost(acked)
    out["lost"] = sum(len(v) for v in lost.values())  # acknowledged, never arrived
    out["missing_incl_outbox"] = sum(len(v) for v in agg.lost(last).values())
    out["out_of_order_sites"] = len(agg.out_of_order())
    out["messages"] = sum(last.values())
    out["outbox_left"] = sum(s["outbox"] for w in final for s in w["sites"])
    if t_kill is not None:  # what to set a loss against: times in s after the kill
        names = {nd.address: nd.name for nd in cluster.nodes}
        gaps = agg.gaps(lost, t_kill)
        out["lost_by_node"] = dict(Counter(names.get(site_node.get(s), "?") for s in gaps))
        out["lost_sites"] = {s: {**g, "node": names.get(site_node.get(s), "?")}
                             for s, g in sorted(gaps.items())[:20]}
        out["aggregator_events"] = [(round(t - t_kill, 1), e) for t, e in agg.events]
        out["out_of_order"] = agg.disorder(t_kill)
    for line in benchlib.environment(("paho-mqtt",)):
        print(line)
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0 if out["lost"] == 0 and out["outbox_left"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
