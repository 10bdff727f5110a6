"""Broker clusters for fleet tests and benchmarks: `nats-server` nodes with MQTT and
JetStream on loopback, routed into one cluster, each killable and restartable on the same
ports and store (what a node crash and its return look like to the sites)."""

from __future__ import annotations

import json
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"


_TAKEN: set[int] = set()


def free_port() -> int:
    """A free port below the ephemeral range: a node's ports must still be free when it
    restarts, after a thousand reconnecting sites have taken ephemeral ports for their
    outgoing connections (one of them took a killed node's port in a trial run)."""
    low, _ = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    while True:
        port = random.randrange(10_000, max(low, 10_001))
        if port in _TAKEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _TAKEN.add(port)
        return port


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def node_config(name: str, host: str, ports: dict[str, int], routes: list[str],
                cluster: str, store_dir: str, consumer_replicas: int = 3) -> str:
    """One cluster member's nats-server configuration, as the tests run it and as
    docs/vpp-fleet.md shows it for a deployment. `ports`: client, http (monitoring),
    route, mqtt; `routes`: host:port of every member's route listener."""
    urls = ", ".join(f"nats-route://{r}" for r in routes)
    memory = str(consumer_replicas == 1).lower()
    return (
        f"server_name: {name}\n"
        f"listen: {host}:{ports['client']}\n"
        f"http: 127.0.0.1:{ports['http']}\n"  # monitoring: this host only
        f"jetstream {{ store_dir: \"{store_dir}\" }}\n"
        f"cluster {{ name: {cluster}, listen: {host}:{ports['route']}, routes: [{urls}] }}\n"
        # Every QoS 1 subscription is a JetStream consumer. The sites subscribe at QoS 0
        # on NATS (no consumer each), so the consumers are the platforms': three replicas
        # on file from their creation, so that one outlives a node. (Raised to three
        # afterwards, one elected no leader within 90 s of a node's loss in a third of our
        # trials.)
        f"mqtt {{ listen: {host}:{ports['mqtt']}, consumer_replicas: {consumer_replicas}, "
        f"consumer_memory_storage: {memory} }}\n"
        "max_connections: 100000\n"
    )


class NatsNode:
    """One cluster member: `mqtt_port` for the sites, `client_port` for NATS clients."""

    def __init__(self, name: str, workdir: Path, ports: dict[str, int], routes: list[int],
                 cluster: str, consumer_replicas: int = 3) -> None:
        self.name = name
        self.workdir = workdir
        self.mqtt_port = ports["mqtt"]
        self.client_port = ports["client"]
        self.http_port = ports["http"]
        self.log = workdir / f"{name}.log"
        self.conf = workdir / f"{name}.conf"
        self.conf.write_text(node_config(
            name, "127.0.0.1", ports, [f"127.0.0.1:{p}" for p in routes], cluster,
            str(workdir / name), consumer_replicas))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.mqtt_port}"

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError(f"{self.name} already running")
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen([NATS, "-c", str(self.conf)], stdout=out,
                                          stderr=subprocess.STDOUT)

    def kill(self) -> None:
        """SIGKILL: a crash, no goodbye to the clients or the cluster."""
        self._stop(signal.SIGKILL)

    def stop(self) -> None:
        self._stop(signal.SIGTERM)

    def _stop(self, sig: int) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def jsz(self) -> dict:
        """The JetStream streams and consumers this node holds (its monitoring endpoint)."""
        url = f"http://127.0.0.1:{self.http_port}/jsz?accounts=true&streams=true&consumers=true&config=true"
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


class NatsCluster:
    """`size` routed nats-server nodes; `start` returns once every MQTT port accepts and an
    MQTT client can publish with QoS 1 through each (JetStream has its meta leader)."""

    def __init__(self, workdir: Path, size: int = 3, name: str = "pedf",
                 consumer_replicas: int = 3) -> None:
        if not Path(NATS).exists():
            raise RuntimeError("nats-server is not installed (Debian: apt-get install "
                               "nats-server)")
        workdir.mkdir(parents=True, exist_ok=True)
        ports = [{k: free_port() for k in ("mqtt", "client", "route", "http")}
                 for _ in range(size)]
        routes = [p["route"] for p in ports]
        self.nodes = [NatsNode(f"n{i + 1}", workdir, ports[i], routes, name, consumer_replicas)
                      for i in range(size)]

    @property
    def hosts(self) -> list[str]:
        return [n.address for n in self.nodes]

    def start(self, timeout: float = 60.0) -> None:
        for n in self.nodes:
            n.start()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60.0, nodes: list[NatsNode] | None = None) -> None:
        deadline = time.monotonic() + timeout
        for n in nodes or self.nodes:
            while not (accepts(n.mqtt_port) and mqtt_works(n.mqtt_port)):
                if not n.running or time.monotonic() > deadline:
                    raise RuntimeError(f"nats node {n.name} not serving MQTT on "
                                       f"{n.address}:\n{n.tail()}")
                time.sleep(0.2)

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def consumer(self, topic_filter: str) -> dict | None:
        """The JetStream consumer behind an MQTT subscription to `topic_filter` (NATS's MQTT
        front end makes one per QoS 1 subscription): its info as its leader sees it, else
        from a node that holds it."""
        subject = "$MQTT.msgs." + topic_filter.replace("/", ".").replace("+", "*")
        found = None
        for n in self.nodes:
            if not n.running:
                continue
            for acc in n.jsz().get("account_details", []):
                for st in acc.get("stream_detail", []):
                    for c in st.get("consumer_detail") or []:
                        if c["config"].get("filter_subject") == subject:
                            if c.get("cluster", {}).get("leader") == n.name:
                                return c  # the leader's view: its followers' state is current
                            found = found or c
        return found

    def node(self, name: str | None) -> NatsNode | None:
        return next((n for n in self.nodes if n.name == name), None)

    def consumer_current(self, topic_filter: str, timeout: float = 30.0) -> dict:
        """Wait until the consumer behind one subscription has a running leader and every
        replica current (the leader's view) and return its info: a leader lost while its
        followers still lag has nobody to hand over to."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.consumer(topic_filter) or {}
            cluster = info.get("cluster", {})
            peers = cluster.get("replicas") or []
            want = info.get("config", {}).get("num_replicas") or 1
            leader = self.node(cluster.get("leader"))
            if leader is not None and leader.running and len(peers) >= want - 1 \
                    and all(p.get("current") for p in peers):
                return info
            if time.monotonic() > deadline:
                raise RuntimeError(f"the consumer for {topic_filter} has no current replicas "
                                   f"after {timeout} s: {cluster}")
            time.sleep(0.1)


def mqtt_works(port: int, timeout: float = 5.0, topic: str = "pedf/probe") -> bool:
    """A QoS 1 publish through this node gets its PUBACK (MQTT there needs JetStream)."""
    import paho.mqtt.client as paho

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"probe-{port}-{time.time_ns()}")
    try:
        c.connect("127.0.0.1", port, keepalive=10)
        c.loop_start()
        info = c.publish(topic, b"1", qos=1)
        info.wait_for_publish(timeout)
        return info.is_published()
    except (OSError, RuntimeError, ValueError):
        return False
    finally:
        c.disconnect()
        c.loop_stop()
