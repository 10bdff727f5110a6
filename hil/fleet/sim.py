"""The fleet simulator: N lightweight sites (site.py) in a few worker processes, each process
one event loop with its share of the sites (and one paho network thread per site, as on a
real node).

A worker is `python -m hil.fleet.sim SPEC.json`; it starts its sites, prints `ready`, then
answers lines on stdin: `status` → one JSON line (every site's status and the process's
CPU seconds and RSS), `stop` → sites flush their outboxes (up to 120 s), the final status,
exit. `Fleet` drives the workers from the test or the benchmark.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

from hil.fleet.site import FleetSite, SiteSpec, draw_sizes

# paho waits on its sockets with select(), which cannot watch a descriptor numbered 1024 or
# above, and a site holds ~7 (its socket, paho's wake-up pair, the SQLite file, WAL and
# shared memory): past ~140 sites a process's newest links never connect. A real node has
# one link; the simulator keeps each worker well below that.
SITES_PER_PROCESS = 120


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def process_status(sites: list[FleetSite]) -> dict:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"pid": os.getpid(), "cpu_s": ru.ru_utime + ru.ru_stime, "rss_kb": rss_kb(),
            "threads": threading.active_count(), "sites": [s.status() for s in sites]}


async def worker(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    state = Path(spec["state_dir"])
    sites = [FleetSite(SiteSpec(**{**s, "hosts": tuple(s["hosts"]), "groups": tuple(s["groups"])}),
                       state, spec["telemetry_s"], spec["flex_s"]) for s in spec["sites"]]
    for s in sites:  # at a steady rate, as a fleet coming back after an outage would not
        await s.start()
        await asyncio.sleep(1 / spec["connect_per_s"])
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def read() -> None:  # stdin in a thread: the loop stays free for the sites
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.strip())
        loop.call_soon_threadsafe(lines.put_nowait, "stop")

    threading.Thread(target=read, daemon=True).start()
    print("ready", flush=True)
    while True:
        line = await lines.get()
        if line == "status":
            print(json.dumps(process_status(sites)), flush=True)
        elif line == "stop":
            await asyncio.gather(*(s.stop(flush_s=120.0) for s in sites))
            print(json.dumps(process_status(sites)), flush=True)
            return


class Fleet:
    """`n` sites with ratings summing to `capacity_kw`, split over `processes` workers.
    `hosts`: the broker list; site i tries it rotated by i, so the sites spread evenly over
    the brokers (a third on each node of a 3-node cluster)."""

    def __init__(self, n: int, capacity_kw: float, hosts: list[str], state_dir: Path, *,
                 processes: int = 4, broker: str = "nats", groups: tuple[str, ...] = (),
                 opt_out: int = 0, telemetry_s: float = 5.0, flex_s: float = 60.0,
                 seed: int = 1, connect_per_s: float = 200.0) -> None:
        sizes = draw_sizes(n, capacity_kw, seed)
        self.specs = [SiteSpec(f"s{i:05d}", sizes[i],
                               tuple(hosts[i % len(hosts):] + hosts[:i % len(hosts)]),
                               broker, groups, opt_out=i < opt_out) for i in range(n)]
        self.state_dir = state_dir
        self.processes = max(1, min(n, max(processes, math.ceil(n / SITES_PER_PROCESS))))
        self.settings = {"telemetry_s": telemetry_s, "flex_s": flex_s,
                         "connect_per_s": connect_per_s / self.processes}
        self._procs: list[subprocess.Popen[str]] = []

    def start(self, timeout: float = 120.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for k in range(self.processes):
            path = self.state_dir / f"worker{k}.json"
            path.write_text(json.dumps({
                **self.settings, "state_dir": str(self.state_dir),
                "sites": [asdict(s) for s in self.specs[k::self.processes]]}))
            self._procs.append(subprocess.Popen(
                [sys.executable, "-m", "hil.fleet.sim", str(path)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=(self.state_dir / f"worker{k}.log").open("w"),
                text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}))
        deadline = time.monotonic() + timeout
        for k, p in enumerate(self._procs):
            line = p.stdout.readline()  # type: ignore[union-attr]
            if line.strip() != "ready" or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"fleet worker {k} did not start: {line!r}; see "
                                   f"{self.state_dir / f'worker{k}.log'}")

    def _ask(self, what: str) -> list[dict]:
        for p in self._procs:
            p.stdin.write(what + "\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        return [json.loads(p.stdout.readline()) for p in self._procs]  # type: ignore[union-attr]

    def status(self) -> list[dict]:
        """Per worker: pid, cpu_s, rss_kb, threads and its sites' status."""
        return self._ask("status")

    def sites(self) -> dict[str, dict]:
        return {s["site"]: s for w in self.status() for s in w["sites"]}

    def stop(self) -> list[dict]:
        """Flush and stop every site; the workers' final status."""
        final = self._ask("stop")
        for p in self._procs:
            p.wait(150)
        self._procs = []
        return final

    def kill(self) -> None:
        for p in self._procs:
            p.kill()
            p.wait()
        self._procs = []


if __name__ == "__main__":
    asyncio.run(worker(Path(sys.argv[1])))
