"""What both OCPP versions' charge-point handlers share: the `ocpp` library's ChargePoint
with our logging, staleness stamp, an answer to frames it cannot parse, a receive loop that
ends quietly when the socket closes, and calls that fail one way (`CallFailed`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ocpp.exceptions import FormatViolationError, OCPPError
from ocpp.messages import Call, CallError, MessageType, unpack
from websockets.exceptions import ConnectionClosed

from drivers.ocpp.quiet import Throttle, WireLog
from drivers.ocpp.station import Station, Tx

log = logging.getLogger(__name__)

# Our charging profiles, one id each so a new one replaces its predecessor on the charger.
PROFILE_ID = {"max": 9101, "safe": 9102, "default": 9103, "tx": 9104}
LEAD_S = 60  # schedules start this far in the past: a charger whose clock runs behind ours
# would otherwise hold our limit back until its clock catches up


class CallFailed(Exception):
    """A CALL got no usable answer. `answered`: the charger replied (a CallError, a reply we
    cannot read), so asking again will not help; otherwise it timed out or the socket
    closed."""

    def __init__(self, reason: str, answered: bool) -> None:
        super().__init__(reason)
        self.answered = answered


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def wall_clock() -> datetime:
    return datetime.now(UTC)


class Point:
    """Mixed in before the version's `ocpp` ChargePoint. The version class adds the
    handlers and `read_stack_level`, `set_profile`, `clear_profile`."""

    protocol = ""  # the WebSocket subprotocol

    def __init__(self, station: Station, connection, *, response_timeout_s: float,
                 throttle: Throttle, on_boot: Callable[[], None],
                 now: Callable[[], datetime] = wall_clock) -> None:
        who = f"charger {station.name}"
        super().__init__(station.spec.charge_point_id, connection,  # type: ignore[call-arg]
                         response_timeout=response_timeout_s,
                         logger=WireLog(logging.getLogger(type(self).__module__), throttle, who))
        self.station, self.throttle, self.on_boot, self.who = station, throttle, on_boot, who
        self.now = now  # the site's clock: simulated under the HIL, as the chargers' is

    def now_iso(self) -> str:
        return iso(self.now())

    def schedule_start(self) -> str:
        """A minute in the past, so a charger whose clock runs a little ahead applies it."""
        return iso(self.now() - timedelta(seconds=LEAD_S))

    async def start(self) -> None:
        """Receive and handle frames until the socket closes."""
        try:
            while True:
                await self.route_message(await self._connection.recv())
        except ConnectionClosed:
            return

    async def route_message(self, raw_msg) -> None:
        self.station.seen()
        try:
            msg = unpack(raw_msg)
        except OCPPError as exc:
            await self._unparsable(raw_msg, exc)
            return
        try:
            await super().route_message(raw_msg)  # type: ignore[misc]
        except ConnectionClosed:
            raise
        except Exception:  # noqa: BLE001 - the library lets some faults through: keep going
            self.throttle.say((self.who, "handling"), logging.ERROR,
                              "%s: handling %.200r failed", self.who, raw_msg, exc_info=True)
            if isinstance(msg, Call):
                await self._send(msg.create_call_error(None).to_json())

    async def _unparsable(self, raw: object, exc: OCPPError) -> None:
        """A frame the library cannot read: it would only log it; OCPP-J wants a CallError,
        under the frame's message id when it has one and "-1" otherwise."""
        unique_id = "-1"
        try:
            frame = json.loads(raw)
            if (isinstance(frame, list) and len(frame) > 1 and frame[0] == MessageType.Call
                    and isinstance(frame[1], str)):
                unique_id = frame[1]
        except (TypeError, ValueError):
            pass
        code = exc.code
        if isinstance(exc, FormatViolationError) and self._ocpp_version == "1.6":
            code = "FormationViolation"  # 1.6 spells it so
        cause = (exc.details or {}).get("cause") or exc.description
        self.throttle.say((self.who, "unparsable"), logging.WARNING,
                          "%s: unreadable frame answered with %s: %s (%.200r)", self.who,
                          code, cause, raw)
        try:
            await self._send(CallError(unique_id, code, exc.description, {}).to_json())
        except ConnectionClosed:
            pass

    async def request(self, payload):
        """`call` with every failure as CallFailed (the library raises timeouts, OCPPError,
        its own unknown-error-code exception, the socket's ConnectionClosed ...). One CALL
        is out at a time, and its answer is found by message id: a reply that comes after
        its CALL timed out waits in the library's queue until the next CALL reads it, sees
        a foreign id and drops it, so it never answers a later CALL (a test proves it)."""
        action = type(payload).__name__
        try:
            return await self.call(payload, suppress=False)  # type: ignore[attr-defined]
        except TimeoutError as exc:
            raise CallFailed(f"{action}: no answer in {self._response_timeout:g} s",
                             answered=False) from exc
        except ConnectionClosed as exc:
            raise CallFailed(f"{action}: connection closed", answered=False) from exc
        except OCPPError as exc:
            raise CallFailed(f"{action}: {exc.code} {exc.description}", answered=True) from exc
        except Exception as exc:  # noqa: BLE001 - a reply the library cannot read
            raise CallFailed(f"{action}: {exc}", answered=True) from exc

    # --- what the version class provides -----------------------------------------------

    async def read_stack_level(self) -> int | None:
        raise NotImplementedError

    async def set_meter_interval(self, seconds: int) -> str:
        """Ask for meter values every `seconds` during a transaction; the charger's answer."""
        raise NotImplementedError

    async def set_profile(self, purpose: str, amps: float, stack: int,
                          duration: int | None = None, tx: Tx | None = None) -> str:
        """Install one of our profiles (purpose a PROFILE_ID key) in A; the charger's status
        answer ("Accepted", "Rejected", "NotSupported")."""
        raise NotImplementedError

    async def clear_profile(self, purpose: str) -> None:
        raise NotImplementedError
