"""Modbus TCP's transaction layer, every TCP endpoint's client: one transaction on the wire at
a time by default, or several on one connection for gateways and devices that accept them
(`max_in_flight` > 1 on the endpoint; off by default, since many gateways answer only one
request at a time and drop or garble the rest).

Modbus TCP matches a reply to its request by the MBAP transaction id, so nothing in the
protocol makes a client wait for one reply before sending the next request. pymodbus's
client does wait: its transaction manager holds one lock around every request and keeps a
single reply future, so at most one transaction is ever on the wire per client. Hence this
module: pymodbus still builds and parses every frame (its request/response PDU classes, the
socket framer and the PDU decoder), and what is ours is only the transaction layer - a table
of transactions keyed by id, a reply timeout per transaction, and a limit on how many are on
the wire at once. It is also the cheaper path for one transaction at a time (about a fifth
less CPU per request than pymodbus's transaction manager), so it carries every TCP request.

`PipelinedTcpClient` offers the pymodbus client calls the endpoint makes
(`read_holding_registers`, `write_registers`, ... from `ModbusClientMixin`), so
`drivers.modbus.endpoint` runs over it unchanged. Semantics the endpoint relies on:

- a reply is matched by transaction id, in whatever order replies come back;
- no reply within `timeout_s` of sending raises `TimeoutError` for that request only; the
  connection stays up for the others, and a reply arriving later is discarded by its id.
  A device that queues pipelined requests (a TCP-to-RTU gateway works through them one by
  one on its bus) answers the last of N only after N service times, so while replies to
  other transactions keep coming within `timeout_s` a request waits on, up to
  `max_in_flight` x `timeout_s` after it was sent: a silent unit is still found out, and a
  busy queue is not taken for silence;
- a request whose caller gave up (cancelled by the cycle's deadline) stays accounted: it
  keeps its place on the wire until its reply or its timeout, so a device is never sent more
  than `max_in_flight` requests it may still be working on; a caller cancelled while its
  request still waited for a place raises `NotSent`, so the endpoint does not count a
  request that never left as unanswered;
- a connection-level error (closed by the peer, reset, a frame that is not Modbus TCP)
  fails every request in flight with `ConnectionError` and leaves the client disconnected,
  for the endpoint to drop and re-open with its backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.exceptions import ModbusException, ModbusIOException
from pymodbus.framer import FramerSocket
from pymodbus.pdu import DecodePDU, ModbusPDU

from drivers.modbus.fastpdu import fast_registers

log = logging.getLogger(__name__)

MBAP_LEN = 7  # transaction id, protocol id, length, unit id
MAX_ADU = 260  # MBAP + the largest PDU (253 bytes)
TID_SPACE = 0x10000


class NotSent(asyncio.CancelledError):
    """The caller was cancelled while its request waited for a place on the wire: nothing
    went out, so no reply is missing."""


@dataclass(slots=True)
class _Transaction:
    request: ModbusPDU
    reply: asyncio.Future[ModbusPDU]
    expiry: asyncio.TimerHandle
    sent: float  # loop time


class PipelinedTcpClient(ModbusClientMixin[Awaitable[ModbusPDU]]):
    """One Modbus TCP connection with up to `max_in_flight` transactions on the wire.

    One instance is one connection: `connect()` once, and after `close()` or a lost
    connection make a new one (the endpoint does, on its next request)."""

    def __init__(self, host: str, port: int, timeout_s: float, max_in_flight: int) -> None:
        super().__init__()
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self.host, self.port = host, port
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self._framer = FramerSocket(DecodePDU(is_server=False))
        fast_registers(self._framer.decoder.register)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._pending: dict[int, _Transaction] = {}
        self._next_tid = 0
        self._last_reply = 0.0  # loop time of the last reply on this connection
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._closed

    @property
    def in_flight(self) -> int:
        """Transactions on the wire, abandoned ones included, until answered or timed out."""
        return len(self._pending)

    async def connect(self) -> bool:
        """Open the connection; False when refused or not open within `timeout_s`."""
        if self._closed or self._writer is not None:
            return self.connected
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout_s)
        except (OSError, TimeoutError) as exc:
            log.debug("%s:%d: connect failed: %s", self.host, self.port, exc)
            return False
        self._writer = writer
        self._reader_task = asyncio.create_task(
            self._read_replies(reader), name=f"modbus-pipeline {self.host}:{self.port}")
        return True

    def close(self) -> None:
        self._lose(ConnectionError(f"{self.host}:{self.port}: connection closed"))

    def execute(self, no_response_expected: bool, request: ModbusPDU) -> Awaitable[ModbusPDU]:
        """Send `request` once its turn on the wire comes; its reply (an exception reply
        included: `isError()`). Every request here expects a reply."""
        if no_response_expected:
            raise ValueError("a pipelined transaction always waits for its reply")
        return self._transact(request)

    async def _transact(self, request: ModbusPDU) -> ModbusPDU:
        try:
            await self._slots.acquire()  # released when the transaction ends, not on return
        except asyncio.CancelledError as exc:
            raise NotSent(*exc.args) from exc
        if not self.connected:
            self._slots.release()
            raise ConnectionError(f"{self.host}:{self.port}: not connected")
        loop = asyncio.get_running_loop()
        tid = self._new_tid()
        request.transaction_id = tid
        reply: asyncio.Future[ModbusPDU] = loop.create_future()
        expiry = loop.call_later(self.timeout_s, self._expire, tid)
        self._pending[tid] = _Transaction(request, reply, expiry, loop.time())
        self._writer.write(self._framer.buildFrame(request))  # type: ignore[union-attr]
        return await reply  # cancelling the caller cancels only this wait; the entry stays

    def _new_tid(self) -> int:
        """The next transaction id not in flight (1..65535, cycling): a late reply is
        discarded unless 65535 transactions went by while it was late."""
        while True:
            self._next_tid = self._next_tid % (TID_SPACE - 1) + 1
            if self._next_tid not in self._pending:
                return self._next_tid

    def _end(self, tid: int) -> _Transaction | None:
        """Take a transaction off the wire and give its slot to the next request."""
        tx = self._pending.pop(tid, None)
        if tx is not None:
            tx.expiry.cancel()
            self._slots.release()
        return tx

    def _expire(self, tid: int) -> None:
        tx = self._pending.get(tid)
        if tx is None:
            return
        loop = asyncio.get_running_loop()
        queued_until = min(self._last_reply + self.timeout_s,
                           tx.sent + self.max_in_flight * self.timeout_s)
        if queued_until > loop.time():  # the device is still answering the ones ahead
            tx.expiry = loop.call_at(queued_until, self._expire, tid)
            return
        self._end(tid)
        if not tx.reply.done():
            tx.reply.set_exception(TimeoutError(
                f"no reply within {loop.time() - tx.sent:.2g} s (transaction {tid}, unit "
                f"{tx.request.dev_id}, function {tx.request.function_code})"))

    def _answer(self, reply: ModbusPDU) -> None:
        self._last_reply = asyncio.get_running_loop().time()
        tx = self._end(reply.transaction_id)
        if tx is None:
            log.debug("%s:%d: discarding a reply to transaction %d, not in flight "
                      "(late, or never asked)", self.host, self.port, reply.transaction_id)
            return
        if tx.reply.done():  # its caller gave up; the slot is free again
            return
        req = tx.request
        if (req.dev_id and reply.dev_id != req.dev_id) or (
                reply.function_code & 0x7F) != req.function_code:
            tx.reply.set_exception(ModbusIOException(
                f"reply to transaction {req.transaction_id} is for unit {reply.dev_id} "
                f"function {reply.function_code}, not unit {req.dev_id} function "
                f"{req.function_code}"))
            return
        tx.reply.set_result(reply)

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        """Split the byte stream into MBAP frames and hand each reply to its transaction."""
        buffer = b""
        try:
            while data := await reader.read(4096):
                buffer += data
                while len(buffer) >= MBAP_LEN:
                    if buffer[2:4] != b"\0\0" or not 2 <= int.from_bytes(buffer[4:6], "big") \
                            <= MAX_ADU - 6:
                        raise ModbusIOException(f"not a Modbus TCP frame: {buffer[:8].hex()}")
                    used, dev_id, tid, pdu_bytes = self._framer.decode(buffer)
                    if not used:
                        break  # the rest of the frame is still on its way
                    buffer = buffer[used:]
                    self._deliver(tid, dev_id, pdu_bytes)
            self._lose(ConnectionError(f"{self.host}:{self.port}: connection closed by peer"))
        except asyncio.CancelledError:
            self._lose(ConnectionError(f"{self.host}:{self.port}: connection closed"))
            raise
        except (OSError, ModbusException) as exc:
            self._lose(ConnectionError(f"{self.host}:{self.port}: {exc}"))

    def _deliver(self, tid: int, dev_id: int, pdu_bytes: bytes) -> None:
        """One reply frame. An undecodable one fails its own transaction only: the MBAP
        length kept the frame boundaries, so the other transactions are not affected."""
        reply = self._framer.decoder.decode(pdu_bytes)
        if reply is None:
            tx = self._end(tid)
            if tx is not None and not tx.reply.done():
                tx.reply.set_exception(ModbusIOException(
                    f"undecodable reply to transaction {tid}: {pdu_bytes.hex()}"))
            return
        reply.transaction_id, reply.dev_id = tid, dev_id
        self._answer(reply)

    def _lose(self, exc: ConnectionError) -> None:
        """The connection is gone: fail every transaction in flight and every request
        waiting for its turn; the client stays disconnected."""
        if self._closed:
            return
        self._closed = True
        for tid in list(self._pending):
            tx = self._end(tid)
            if tx is not None and not tx.reply.done():
                tx.reply.set_exception(exc)
        self._slots.release()  # a waiter wakes, finds us closed, and passes the slot on
        if self._writer is not None:
            self._writer.close()
        task, self._reader_task = self._reader_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def aclose(self) -> None:
        """close(), then wait for the reader to finish (tests, clean shutdown)."""
        task = self._reader_task
        self.close()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
