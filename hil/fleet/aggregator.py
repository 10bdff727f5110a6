"""A reference VPP aggregator — for tests, benchmarks and as a worked example of the node's
contract, not a product platform: one MQTT client that keeps each site's latest flex, sums
the fleet's flex per 15-min interval, splits a fleet target into per-site dispatches by the
flex each site declared, tracks the acks, re-dispatches what was refused or went
unanswered to the sites that still have room, and reports delivered against requested.

Ingress is one subscription to `<prefix>/+/+` (flex, ack, telemetry, status). On a broker
with shared subscriptions (Mosquitto, EMQX, HiveMQ) give `share` and run several
aggregators: each message reaches one of them. NATS 2.9's MQTT front end does not deliver
`$share/` subscriptions (we checked: nothing arrives); there a NATS queue group on the
subject `pedf.v1.*.*` plays that part, and this reference runs as one instance.

Every outboxed message carries the site's msg_id: `lost()` names the ids a site assigned
that never arrived, `out_of_order()` the sites whose first deliveries went backwards.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho


@dataclass
class FleetDispatch:
    cmd_id: str
    direction: str
    requested_kw: float
    duration_s: float
    sent_at: float  # monotonic
    shares: dict[str, float] = field(default_factory=dict)  # site -> kW asked (latest)
    cmd_ids: dict[str, str] = field(default_factory=dict)  # site -> cmd_id it answers to
    baselines: dict[str, float] = field(default_factory=dict)
    offered: dict[str, float] = field(default_factory=dict)  # site -> flex kW it declared
    rounds: int = 0


class Aggregator:
    def __init__(self, hosts: list[str], prefix: str = "pedf/v1", share: str | None = None,
                 client_id: str = "pedf-aggregator", qos: int = 1) -> None:
        self.prefix = prefix
        self.qos = qos
        self._brokers = [(h.rpartition(":")[0], int(h.rpartition(":")[2])) for h in hosts]
        self._at = 0
        self._lock = threading.Lock()
        self.flex: dict[str, dict] = {}
        self.telemetry: dict[str, dict] = {}
        self.status: dict[str, str] = {}
        self.ids: dict[str, list[int]] = defaultdict(list)  # msg_ids as they arrived
        self.arrived: dict[str, list[float]] = defaultdict(list)  # when each of those came
        self.events: list[tuple[float, str]] = []  # (monotonic, what): the connection's
        # ups and downs, to set missing msg_ids against
        self.acks: dict[str, dict[str, dict]] = defaultdict(dict)  # cmd_id -> site -> last
        self.ack_at: dict[str, dict[str, float]] = defaultdict(dict)  # first answer, monotonic
        self.received = 0
        self.subscribed = threading.Event()
        topic = f"{prefix}/+/+"
        self._topic = f"$share/{share}/{topic}" if share else topic
        # A persistent session: what the sites send while this client reconnects (a broker
        # node lost, JetStream leaders moving) waits for it instead of being dropped.
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                   protocol=paho.MQTTv311, clean_session=False)
        self._client.max_inflight_messages_set(100)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(0.2, 2.0)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = lambda *a: self.subscribed.set()
        self._client.on_message = self._on_message

    # -- connection ------------------------------------------------------------------------

    def start(self) -> None:
        self._client.connect_async(*self._brokers[0], keepalive=10)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        host, port = self._brokers[self._at]
        self.events.append((time.monotonic(), f"connect {host}:{port} {reason} "
                                              f"session_present={flags.session_present}"))
        if not reason.is_failure:
            client.subscribe(self._topic, qos=self.qos)

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        self.events.append((time.monotonic(), f"disconnect {reason}"))

    def _on_connect_fail(self, client, userdata) -> None:
        self.events.append((time.monotonic(), "connect failed"))
        self._at = (self._at + 1) % len(self._brokers)
        client.connect_async(*self._brokers[self._at], keepalive=10)

    def _on_message(self, client, userdata, msg) -> None:
        parts = msg.topic.split("/")
        site, kind = parts[-2], parts[-1]
        if kind == "status":
            with self._lock:
                self.status[site] = msg.payload.decode(errors="replace")
            return
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        now = time.monotonic()
        with self._lock:
            self.received += 1
            if isinstance(doc.get("msg_id"), int):
                self.ids[site].append(doc["msg_id"])
                self.arrived[site].append(now)
            if kind == "flex":
                self.flex[site] = doc
            elif kind == "telemetry":
                self.telemetry[site] = doc
            elif kind == "ack" and doc.get("cmd_id"):
                cmd = doc["cmd_id"]
                if doc.get("status") != "done" or site not in self.acks[cmd]:
                    self.acks[cmd][site] = doc
                self.ack_at[cmd].setdefault(site, now)

    # -- the fleet's flex ------------------------------------------------------------------

    def fleet_flex(self) -> list[dict[str, Any]]:
        """Per 15-min interval start: the summed up/down kW and kWh, and how many sites."""
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for doc in self.flex.values():
                for iv in doc["intervals"]:
                    row = out.setdefault(iv["start"], {"start": iv["start"], "sites": 0,
                                                       "up_kw": 0.0, "down_kw": 0.0,
                                                       "up_kwh": 0.0, "down_kwh": 0.0})
                    row["sites"] += 1
                    for k in ("up_kw", "down_kw", "up_kwh", "down_kwh"):
                        row[k] += iv[k]
        return [out[k] for k in sorted(out)]

    def offer(self, direction: str, hours: float | None = None) -> dict[str, tuple[float, float]]:
        """site -> (baseline kW, the kW it can hold for `hours` in `direction`) from its
        latest flex, first interval: its kW, or its energy spread over the hours if less
        (`hours` None: its kW as declared, as the nodes' pro-rata rule reads it)."""
        kw, kwh = ("up_kw", "up_kwh") if direction == "reduce" else ("down_kw", "down_kwh")
        out = {}
        with self._lock:
            for s, d in self.flex.items():
                iv = d["intervals"][0] if d["intervals"] else None
                if iv is not None and iv["baseline_kw"] is not None:
                    held = iv[kw] if hours is None else min(iv[kw], iv[kwh] / max(hours, 0.25))
                    out[s] = (iv["baseline_kw"], held)
        return out

    # -- dispatch --------------------------------------------------------------------------

    def dispatch(self, cmd_id: str, kw: float, duration_s: float,
                 direction: str = "reduce") -> FleetDispatch:
        """Split `kw` over the sites pro rata to the flex each declared (never more than it
        declared) and send each its grid target: baseline ∓ share."""
        offer = self.offer(direction, duration_s / 3600)
        total = sum(f for _, f in offer.values())
        if total <= 0:
            raise ValueError("no site has declared flex in that direction yet")
        d = FleetDispatch(cmd_id, direction, kw, duration_s, time.monotonic())
        scale = min(kw / total, 1.0)
        for site, (base, f) in offer.items():
            d.baselines[site], d.offered[site] = base, f
            if f * scale > 0:
                self._send(d, site, f * scale, cmd_id)
        return d

    def dispatch_group(self, gid: str, cmd_id: str, kw: float, duration_s: float,
                       direction: str = "reduce") -> FleetDispatch:
        """One message to the group: each site takes kw × its flex / the fleet's flex."""
        offer = self.offer(direction, None)
        total = sum(f for _, f in offer.values())
        d = FleetDispatch(cmd_id, direction, kw, duration_s, time.monotonic())
        for site, (base, f) in offer.items():
            d.baselines[site], d.offered[site] = base, f
            d.shares[site], d.cmd_ids[site] = kw * f / total, cmd_id
        doc = {"cmd_id": cmd_id, "duration_s": duration_s, "direction": direction,
               "rule": "pro_rata_flex", "fleet_kw": kw, "fleet_flex_kw": round(total, 3)}
        self._client.publish(f"{self.prefix}/group/{gid}/cmd/dispatch", json.dumps(doc), qos=1)
        return d

    def _send(self, d: FleetDispatch, site: str, share: float, cmd_id: str) -> None:
        sign = -1 if d.direction == "reduce" else 1
        doc = {"cmd_id": cmd_id, "duration_s": d.duration_s,
               "grid_target_kw": round(d.baselines[site] + sign * share, 3)}
        d.shares[site], d.cmd_ids[site] = share, cmd_id
        self._client.publish(f"{self.prefix}/{site}/cmd/dispatch", json.dumps(doc), qos=1)

    def answers(self, d: FleetDispatch) -> dict[str, str]:
        """site -> status of its answer to the command it holds now (absent: none yet)."""
        with self._lock:
            return {s: self.acks[c][s]["status"] for s, c in d.cmd_ids.items()
                    if s in self.acks[c]}

    def redispatch(self, d: FleetDispatch) -> float:
        """Move the shares of the sites that refused (or have not answered) to the sites
        that accepted, up to the flex each declared; returns the kW left unplaced. Each
        site asked for more gets a new command that supersedes its first."""
        answers = self.answers(d)
        offer = self.offer(d.direction, d.duration_s / 3600)
        failed = [s for s in d.shares if answers.get(s) not in ("accepted", "done")]
        missing = sum(d.shares.pop(s) for s in failed)
        for s in failed:
            d.cmd_ids.pop(s)
        room = {s: offer[s][1] - d.shares[s] for s in d.shares if s in offer}
        free = sum(r for r in room.values() if r > 0)
        if missing <= 0 or free <= 0:
            return max(missing, 0.0)
        d.rounds += 1
        scale = min(missing / free, 1.0)
        for s, r in room.items():
            if r > 0:
                self._send(d, s, d.shares[s] + r * scale, f"{d.cmd_id}-r{d.rounds}")
        return max(missing - free, 0.0)

    def responses(self, d: FleetDispatch) -> dict[str, float]:
        """site -> its response now: baseline − PCC power in its latest telemetry (+ in the
        dispatch's direction)."""
        sign = 1 if d.direction == "reduce" else -1
        with self._lock:
            return {s: sign * (d.baselines[s] - self.telemetry[s]["grid_kw"])
                    for s in d.shares if s in self.telemetry}

    def report(self, d: FleetDispatch) -> dict[str, Any]:
        """Requested vs accepted vs delivered (baseline − the PCC power in each accepting
        site's latest telemetry, in the dispatch's direction) and the ack latency."""
        answers = self.answers(d)
        ok = [s for s, a in answers.items() if a in ("accepted", "done")]
        sign = 1 if d.direction == "reduce" else -1
        with self._lock:
            delivered = sum(sign * (d.baselines[s] - self.telemetry[s]["grid_kw"])
                            for s in ok if s in self.telemetry)
            lat = sorted(self.ack_at[d.cmd_ids[s]][s] - d.sent_at for s in answers
                         if s in self.ack_at[d.cmd_ids[s]])
        return {
            "requested_kw": d.requested_kw, "accepted_kw": sum(d.shares[s] for s in ok),
            "delivered_kw": delivered, "delivered_ratio": delivered / d.requested_kw,
            "sites_asked": len(d.shares) + 0, "accepted": len(ok),
            "refused": sum(1 for a in answers.values() if a == "rejected"),
            "unanswered": len(d.cmd_ids) - len(answers),
            "ack_p50_ms": _pct(lat, 50) * 1000, "ack_p99_ms": _pct(lat, 99) * 1000,
            "ack_max_ms": (lat[-1] if lat else math.nan) * 1000, "rounds": d.rounds,
        }

    # -- delivery check --------------------------------------------------------------------

    def lost(self, last_ids: dict[str, int]) -> dict[str, list[int]]:
        """Per site, msg_ids 1..last that never arrived (only sites with any missing)."""
        with self._lock:
            got = {s: set(v) for s, v in self.ids.items()}
        out = {}
        for s, last in last_ids.items():
            missing = sorted(set(range(1, last + 1)) - got.get(s, set()))
            if missing:
                out[s] = missing
        return out

    def heard_since(self, t: float) -> set[str]:
        """Sites with a message that arrived after `t` (monotonic)."""
        with self._lock:
            return {s for s, times in self.arrived.items() if times and times[-1] > t}

    def gaps(self, lost: dict[str, list[int]], t0: float) -> dict[str, dict[str, Any]]:
        """Per site with missing msg_ids: how many, the first and last, and when (s after
        `t0`, monotonic) the messages just before and just after the gap arrived."""
        out = {}
        with self._lock:
            for s, missing in lost.items():
                when = dict(zip(self.ids.get(s, []), self.arrived.get(s, []), strict=True))
                lo, hi = missing[0], missing[-1]
                before = [when[i] for i in when if i < lo]
                after = [when[i] for i in when if i > hi]
                out[s] = {"missing": len(missing), "first": lo, "last": hi,
                          "prev_arrived_s": round(max(before) - t0, 1) if before else None,
                          "next_arrived_s": round(min(after) - t0, 1) if after else None}
        return out

    def out_of_order(self) -> list[str]:
        """Sites whose messages, first deliveries only, did not arrive in msg_id order."""
        return list(self.disorder(0.0, limit=None))

    def disorder(self, t0: float, limit: int | None = 20) -> dict[str, dict]:
        """For up to `limit` sites (None: all) whose first deliveries went backwards: the
        first msg_id that arrived after a newer one, and when each of the two arrived (s
        after `t0`)."""
        out: dict[str, dict] = {}
        with self._lock:
            for s, ids in self.ids.items():
                seen: set[int] = set()
                top, top_at = 0, t0
                for i, at in zip(ids, self.arrived[s], strict=True):
                    if i in seen:
                        continue
                    seen.add(i)
                    if i < top:
                        out[s] = {"msg_id": i, "arrived_s": round(at - t0, 2), "after": top,
                                  "after_arrived_s": round(top_at - t0, 2)}
                        break
                    top, top_at = i, at
                if limit is not None and len(out) >= limit:
                    break
        return out


def _pct(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    return values[min(len(values) - 1, math.ceil(p / 100 * len(values)) - 1)]
