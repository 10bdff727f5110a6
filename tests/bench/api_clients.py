"""Operator dashboards against a daemon's API, in a process of their own: the load of
bench_api.py. Each dashboard holds the live stream (/api/v1/stream) open and polls
/api/v1/state and /api/v1/history (the last 24 h) every few seconds, as a dashboard page
does; each has its own HTTP client, so its own connections.

It prints `streaming N` once every stream has delivered its first state, and on SIGTERM one
JSON line: states read, states skipped (gaps in the event ids: the daemon dropped them for a
slow reader), polls answered and failed, poll latencies in ms, and when each poll was in
flight (wall clock, so the bench can tell which cycles a request overlapped).

Run by bench_api.py: python tests/bench/api_clients.py --port P [--clients 10] [--poll-s 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx

HOST = "127.0.0.1"


@dataclass
class Tally:
    states: int = 0
    skipped: int = 0
    stream_failures: int = 0
    polls: int = 0
    poll_failures: int = 0
    state_ms: list[float] = field(default_factory=list)
    history_ms: list[float] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)  # wall clock, each poll
    last_error: str = ""


async def read_stream(c: httpx.AsyncClient, tally: Tally, first: asyncio.Event) -> None:
    """Count `state` events; the `id:` line is the cycle number, so a jump is a skipped
    state. A stream that ends or fails is opened again after a second."""
    while True:
        last_id = None
        try:
            async with c.stream("GET", "/api/v1/stream") as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if line.startswith("id: "):
                        cycle = int(line[4:])
                        if last_id is not None and cycle > last_id + 1:
                            tally.skipped += cycle - last_id - 1
                        last_id = cycle
                    elif line.startswith("data: "):
                        tally.states += 1
                        first.set()
        except (httpx.HTTPError, ValueError) as exc:
            tally.last_error = f"stream: {exc!r}"[:200]
        tally.stream_failures += 1
        await asyncio.sleep(1.0)


async def timed_get(c: httpx.AsyncClient, url: str, tally: Tally, into: list[float],
                    params: dict | None = None) -> None:
    t0 = time.time()
    try:
        r = await c.get(url, params=params)
        r.raise_for_status()
        r.json()
    except (httpx.HTTPError, ValueError) as exc:
        tally.poll_failures += 1
        tally.last_error = f"{url}: {exc!r}"[:200]
        return
    t1 = time.time()
    into.append((t1 - t0) * 1e3)
    tally.spans.append((t0, t1))
    tally.polls += 1


async def poll(c: httpx.AsyncClient, tally: Tally, every_s: float) -> None:
    """The page's refresh: the state, then the day's energy intervals, every `every_s` on
    average from a random phase. Each pause is drawn from 0.5-1.5 x `every_s`: a fixed one,
    counted from an answer that comes just after a cycle, would lock the polls to the
    cycle's phase (5 s is 25 cycles of 0.2 s), which a browser elsewhere never does."""
    await asyncio.sleep(random.uniform(0, every_s))
    while True:
        await timed_get(c, "/api/v1/state", tally, tally.state_ms)
        now = datetime.now().astimezone()
        span = {"from": (now - timedelta(hours=24)).isoformat(), "to": now.isoformat()}
        await timed_get(c, "/api/v1/history", tally, tally.history_ms, span)
        await asyncio.sleep(random.uniform(0.5, 1.5) * every_s)


async def main(port: int, clients: int, every_s: float) -> dict:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    tally = Tally()
    firsts = [asyncio.Event() for _ in range(clients)]
    http = [httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30.0)
            for _ in range(clients)]
    tasks = [asyncio.create_task(read_stream(c, tally, f)) for c, f in zip(http, firsts)]
    tasks += [asyncio.create_task(poll(c, tally, every_s)) for c in http]
    waiting = asyncio.gather(*(f.wait() for f in firsts))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([waiting, stopping], return_when=asyncio.FIRST_COMPLETED)
    if waiting.done():
        print(f"streaming {clients}", flush=True)
    await stopping
    waiting.cancel()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, waiting, return_exceptions=True)
    for c in http:
        await c.aclose()
    return tally.__dict__


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True, help="the API's port on 127.0.0.1")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--poll-s", type=float, default=5.0,
                    help="seconds between one dashboard's polls (default 5)")
    args = ap.parse_args()
    if args.clients < 1 or args.poll_s <= 0:
        ap.error("--clients must be >= 1 and --poll-s > 0")
    print(json.dumps(asyncio.run(main(args.port, args.clients, args.poll_s))), flush=True)
    sys.exit(0)
