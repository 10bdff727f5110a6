"""The live stream: one Server-Sent Event `state` per control cycle to every client.

The cycle only sets a flag (`cycle_done`, O(1), nothing awaited); a task of the API builds
the state once per cycle, when someone listens, and offers it to each client's bounded
queue. A client that reads slower than the cycle loses its oldest states, never slows the
cycle or the other clients."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

log = logging.getLogger(__name__)

QUEUE = 8  # states held for a slow client; older ones are dropped
KEEPALIVE_S = 15.0  # a comment line this often while no state comes (proxies, dead peers)
_END = None  # in a client's queue: the API is stopping


def event(doc: dict[str, Any]) -> str:
    data = json.dumps(doc, separators=(",", ":"))
    return f"event: state\nid: {doc.get('cycle', 0)}\ndata: {data}\n\n"


class Stream:
    def __init__(self, build: Callable[[], dict[str, Any] | None], max_clients: int) -> None:
        self._build = build
        self.max_clients = max_clients
        self._clients: set[asyncio.Queue[str | None]] = set()
        self._new = asyncio.Event()
        self.dropped = 0  # states a slow client lost
        self._task: asyncio.Task | None = None

    @property
    def clients(self) -> int:
        return len(self._clients)

    def cycle_done(self, *_: object) -> None:
        """The cycle listener: a new state is there. Never blocks, never raises."""
        self._new.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="api-stream")

    async def stop(self) -> None:
        for q in list(self._clients):
            self._offer(q, _END)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._new.wait()
            self._new.clear()
            if not self._clients:
                continue
            try:
                doc = self._build()
            except Exception:  # noqa: BLE001 - a view bug must not end the stream task
                log.exception("building the state for the stream failed")
                continue
            if doc is None:
                continue
            text = event(doc)
            for q in list(self._clients):
                self._offer(q, text)

    def _offer(self, q: asyncio.Queue[str | None], item: str | None) -> None:
        if q.full():
            q.get_nowait()
            self.dropped += 1
        q.put_nowait(item)

    def full(self) -> bool:
        return len(self._clients) >= self.max_clients

    async def events(self) -> AsyncIterator[str]:
        """One client's stream: the state now, then one per cycle, until it goes away or the
        API stops."""
        q: asyncio.Queue[str | None] = asyncio.Queue(maxsize=QUEUE)
        self._clients.add(q)
        try:
            yield "retry: 2000\n\n"
            doc = self._build()
            if doc is not None:
                yield event(doc)
            while True:
                try:
                    item = await asyncio.wait_for(q.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if item is _END:
                    return
                yield item
        finally:
            self._clients.discard(q)
