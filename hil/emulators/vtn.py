"""Grid-operator emulator: a real openleadr VTN (OpenADR 2.0b, simple HTTP, no signatures)
for integrators and tests. It registers every VEN that asks, issues the DR events of a YAML
file to each VEN once it has registered, requests its TELEMETRY_USAGE report, and records
(and, given `echo`, prints) registrations, opt responses and report values.

Event file (see hil/events/demo.yaml):

    events:
      - id: peak-shave-l2          # optional; unique per VEN
        signal: SIMPLE             # SIMPLE | LOAD_DISPATCH | LOAD_CONTROL
        type: level                # level | delta | setpoint | x-loadControl...
        start_after_s: 60          # wall seconds after the VEN registered (the notice)
        intervals: [{duration_s: 300, value: 2}]
        cancel_after_s: null       # optional: cancel it this long after registration

Times are wall-clock: the VTN runs in real time whatever speed a HIL site runs at. One
emulator per process: openleadr keeps its VTN's signing keys in class attributes.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from openleadr import OpenADRServer, objects
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drivers.fileerrors import FileError, read_yaml, validation_problems

log = logging.getLogger(__name__)

PATH_PREFIX = "/OpenADR2/Simple/2.0b"
DEMO_EVENTS = Path(__file__).resolve().parent.parent / "events" / "demo.yaml"

SignalType = Literal["level", "delta", "setpoint", "x-loadControlCapacity",
                     "x-loadControlPercentOffset", "x-loadControlSetpoint"]
_POWER_TYPES = {"delta", "setpoint", "x-loadControlSetpoint"}


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IntervalSpec(_Spec):
    duration_s: float = Field(gt=0)
    value: float


class EventSpec(_Spec):
    id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    signal: Literal["SIMPLE", "LOAD_DISPATCH", "LOAD_CONTROL"] = "SIMPLE"
    type: SignalType = "level"
    unit: Literal["W", "kW", "MW"] = Field("kW", description="power signals only")
    start_after_s: float = Field(0.0, ge=0)
    intervals: list[IntervalSpec] = Field(min_length=1)
    cancel_after_s: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _signal_fits(self) -> EventSpec:
        if self.signal == "SIMPLE":
            if self.type != "level":
                raise ValueError("a SIMPLE signal has type: level")
            bad = [i.value for i in self.intervals if i.value not in (0, 1, 2, 3)]
            if bad:
                raise ValueError(f"SIMPLE levels are 0, 1, 2 or 3; got {bad}")
        elif self.signal == "LOAD_DISPATCH" and self.type not in ("delta", "setpoint"):
            raise ValueError("a LOAD_DISPATCH signal has type: delta or setpoint")
        elif self.signal == "LOAD_CONTROL" and not self.type.startswith("x-loadControl"):
            raise ValueError("a LOAD_CONTROL signal has type: x-loadControlCapacity, "
                             "x-loadControlPercentOffset or x-loadControlSetpoint")
        return self

    @property
    def duration(self) -> timedelta:
        return timedelta(seconds=sum(i.duration_s for i in self.intervals))


class EventFile(_Spec):
    events: list[EventSpec] = Field(default_factory=list)


def load_events(path: str | Path) -> list[EventSpec]:
    """The events of an event file; FileError with every problem."""
    p = Path(path)
    try:
        return EventFile.model_validate(read_yaml(p) or {}).events
    except ValidationError as exc:
        raise FileError(str(p), validation_problems(exc, dotted=True)) from None


@dataclass(frozen=True, slots=True)
class Tls:
    """HTTPS with client certificates and signed messages (OpenADR 2.0b security): the VTN's
    certificate and key (TLS and signing), the CA both sides' certificates come from, and the
    fingerprints of the VENs allowed in (ven_id -> fingerprint, given out of band)."""

    cert: Path
    key: Path
    ca: Path
    vens: dict[str, str]


@dataclass(frozen=True, slots=True)
class OptResponse:
    ven_id: str
    event_id: str
    opt: str
    at: datetime


@dataclass(frozen=True, slots=True)
class ReportValue:
    ven_id: str
    at: datetime
    value: float


class GridOperator:
    """One VTN on host:port. `plan` events go to each VEN when it first registers."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, poll_s: float = 10.0,
                 plan: list[EventSpec] | None = None, report_s: float | None = None,
                 echo: Callable[[str], None] | None = None, vtn_id: str = "PEDF-GRID-VTN",
                 tls: Tls | None = None) -> None:
        self.host, self.port = host, port
        self.tls = tls
        self.plan = list(plan or [])
        self.report_s = report_s  # None: the rate the VEN offers
        self.echo = echo or (lambda line: log.info("%s", line))
        self.vens: dict[str, dict] = {}  # ven_id -> registration
        self.opts: list[OptResponse] = []
        self.reports: list[ReportValue] = []
        self.issued: dict[str, list[str]] = {}  # ven_id -> event ids
        self.registered = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        with warnings.catch_warnings():  # openleadr 0.5 keys its aiohttp app with a plain str
            warnings.filterwarnings("ignore", message=".*web.AppKey")
            files = {} if tls is None else {
                "cert": str(tls.cert), "key": str(tls.key), "http_cert": str(tls.cert),
                "http_key": str(tls.key), "http_ca_file": str(tls.ca)}
            self.server = OpenADRServer(
                vtn_id=vtn_id, http_host=host, http_port=port, show_fingerprint=False,
                requested_poll_freq=timedelta(seconds=max(poll_s, 1.0)), ven_lookup=self._lookup,
                http_path_prefix=PATH_PREFIX, **files,
            )
        self.server.add_handler("on_create_party_registration", self._register)
        self.server.add_handler("on_register_report", self._register_report)

    @property
    def url(self) -> str:
        scheme = "http" if self.tls is None else "https"
        return f"{scheme}://{self.host}:{self.port}{PATH_PREFIX}"

    async def start(self) -> None:
        await self.server.run()

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.stop()

    # -- registration and reports ----------------------------------------------------------
    def _lookup(self, ven_id: str) -> dict | None:
        """A registered VEN; with TLS also a provisioned one, by its certificate fingerprint
        (no registration_id yet: it may register, nothing else)."""
        if ven_id in self.vens:
            return self.vens[ven_id]
        if self.tls is not None and ven_id in self.tls.vens:
            return {"ven_id": ven_id, "fingerprint": self.tls.vens[ven_id],
                    "registration_id": None}
        return None

    def ven_id(self, ven_name: str) -> str | None:
        return next((v for v, r in self.vens.items() if r["ven_name"] == ven_name), None)

    async def _register(self, payload: dict) -> tuple[str, str]:
        name = payload["ven_name"]
        ven_id = self.ven_id(name) or payload.get("ven_id") or f"ven-{name}"
        first = ven_id not in self.vens
        reg = f"reg-{ven_id}-{len(self.opts)}-{datetime.now(UTC):%H%M%S%f}"
        self.vens[ven_id] = {"ven_id": ven_id, "ven_name": name, "registration_id": reg,
                             "fingerprint": payload.get("fingerprint")}
        self.echo(f"VEN {name} registered as {ven_id}")
        if first:
            now = datetime.now(UTC)
            for spec in self.plan:
                self.issue(ven_id, spec, now + timedelta(seconds=spec.start_after_s),
                           cancel_at=None if spec.cancel_after_s is None
                           else now + timedelta(seconds=spec.cancel_after_s))
        self.registered.set()
        return ven_id, reg

    async def _register_report(self, ven_id: str, resource_id: str, measurement: str,
                               unit: str, scale: str, min_sampling_interval: timedelta,
                               max_sampling_interval: timedelta):
        every = min_sampling_interval
        if self.report_s is not None:
            every = min(max(timedelta(seconds=self.report_s), min_sampling_interval),
                        max_sampling_interval)
        self.echo(f"VEN {ven_id} offers {measurement} of {resource_id} ({scale}{unit}); "
                  f"requested every {every.total_seconds():g} s")

        def received(values: list[tuple[datetime, float]]) -> None:
            for at, value in values:
                self.reports.append(ReportValue(ven_id, at, float(value)))
                self.echo(f"report {ven_id} {resource_id} {at:%H:%M:%S} {value:+.1f} {scale}{unit}")

        return received, every

    # -- events ----------------------------------------------------------------------------
    def issue(self, ven_id: str, spec: EventSpec, start: datetime | None = None,
              cancel_at: datetime | None = None) -> str:
        """Queue an event for the VEN (delivered on its next poll); returns its id."""
        start = start or datetime.now(UTC)
        unit = {"W": ("W", "none"), "kW": ("W", "k"), "MW": ("W", "M")}[spec.unit]
        intervals, t = [], start
        for uid, iv in enumerate(spec.intervals):
            d = timedelta(seconds=iv.duration_s)
            intervals.append(objects.Interval(dtstart=t, duration=d, uid=uid,
                                              signal_payload=iv.value))
            t += d
        event_id = self.server.add_event(
            ven_id=ven_id, signal_name=spec.signal, signal_type=spec.type, intervals=intervals,
            event_id=spec.id and f"{spec.id}-{ven_id}", callback=self._opted,
        )
        event = self.server.events[ven_id][-1]
        event.event_signals[0].current_value = 0.0  # OpenADR rule 14 (0 until active)
        if spec.type in _POWER_TYPES:
            # openleadr's add_event takes no itemBase; power signals carry one (kW by default)
            event.event_signals[0].measurement = objects.Measurement(
                name="powerReal", description="RealPower", unit=unit[0], scale=unit[1],
                power_attributes=objects.PowerAttributes(hertz=50, voltage=230, ac=True))
        self.issued.setdefault(ven_id, []).append(event_id)
        values = ", ".join(f"{i.value:g}" for i in spec.intervals)
        self.echo(f"event {event_id} for {ven_id}: {spec.signal} {spec.type} [{values}] "
                  f"from {start:%H:%M:%S} for {spec.duration.total_seconds():g} s")
        if cancel_at is not None:
            task = asyncio.get_running_loop().create_task(self._cancel_at(ven_id, event_id, cancel_at))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return event_id

    async def _cancel_at(self, ven_id: str, event_id: str, at: datetime) -> None:
        await asyncio.sleep(max((at - datetime.now(UTC)).total_seconds(), 0.0))
        self.cancel(ven_id, event_id)

    def cancel(self, ven_id: str, event_id: str) -> None:
        self.server.cancel_event(ven_id, event_id)
        self.echo(f"event {event_id} for {ven_id}: cancelled")

    def _opted(self, ven_id: str, event_id: str, opt_type: str) -> None:
        self.opts.append(OptResponse(ven_id, event_id, opt_type, datetime.now(UTC)))
        self.echo(f"VEN {ven_id} {opt_type} event {event_id}")

    def opt_of(self, event_id: str) -> str | None:
        return next((o.opt for o in reversed(self.opts) if o.event_id == event_id), None)


def address(vtn_url: str | None) -> tuple[str, int]:
    """Where to listen for a VEN configured with `vtn_url` (default 127.0.0.1:8080)."""
    if not vtn_url:
        return "127.0.0.1", 8080
    parts = urlsplit(vtn_url)
    if parts.scheme != "http" or parts.path.rstrip("/") != PATH_PREFIX:
        raise ValueError(f"the emulator serves http://HOST:PORT{PATH_PREFIX}; openadr.vtn_url "
                         f"is {vtn_url!r}")
    return parts.hostname or "127.0.0.1", parts.port or 80


def _print(line: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} VTN {line}", flush=True)


async def run_vtn(vtn_url: str | None, plan: list[EventSpec], poll_s: float, stop: asyncio.Event,
                  echo: Callable[[str], None] = _print, source: str = "") -> None:
    """Serve the emulator until `stop` is set (the `pedf-edge hil --vtn` command)."""
    host, port = address(vtn_url)
    op = GridOperator(host, port, poll_s, plan, echo=echo)
    await op.start()
    echo(f"grid-operator VTN at {op.url}: {len(plan)} event(s) {source and f'from {source} '}"
         "for each VEN that registers")
    try:
        await stop.wait()
    finally:
        await op.stop()
