"""The OpenADR VEN against a real openleadr VTN (the grid-operator emulator, hil/emulators/vtn.py) on
loopback, controlling a HIL site over Modbus TCP: registration, events, opt decisions,
TELEMETRY_USAGE reports, and a restart in the middle of an event.

The site runs at speed 1 (openleadr works on wall time) on an evening with the battery
resting (no self-consumption), so the grid import before an event is the load and any cut
during it is the event's doing. When a cut happens is judged on the daemon's own clock (the
one the site shares): against the event window the daemon booked, and from the decisions its
control cycle took, each stamped with that clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import free_port, wait_for

from edge import config as config_mod
from edge.app.clock import Clock
from edge.app.daemon import Daemon
from edge.config import Config
from edge.cycle import Decision
from edge.vpp.eventstore import EventStore
from hil.config import hil_of
from hil.emulators.vtn import EventSpec, GridOperator, IntervalSpec, Tls
from hil.site import SimSite

ROOT = Path(__file__).resolve().parents[2]
POLL_S = 0.3
EVENT_S = 7.0  # the restart test's event: long enough to stop, restart and resume inside it


def site_config(tmp_path: Path, vtn_url: str, broker_port: int, soc_pct: float = 80,
                **openadr: object) -> Config:
    data = copy.deepcopy(yaml.safe_load((ROOT / "configs/demo.yaml").read_text()))
    data.pop("planner", None)  # the battery rests unless an event asks
    for dev in data["devices"]:
        dev["port"] = free_port()
        dev["timeout_s"] = 0.2
        if dev["role"] in ("pv", "battery"):
            dev["ramp_kw_per_s"] = 1000
            dev["revert_s"] = 60
        if dev["role"] == "battery":
            dev["sim"] = {"initial_soc_pct": soc_pct}
    data["control"].update({"cycle_s": 0.5, "deadband_kw": 0.1,
                            "functions": ["peak_shaving", "export_limit"]})
    data["mqtt"]["port"] = broker_port
    data["storage"]["dir"] = str(tmp_path / "state")
    data["hil"]["start"] = "2026-06-22T19:00:00+08:00"  # office still busy, no PV
    data["dr"] = {"ramp_in_s": 0, "restore_s": 0}  # steps, so seconds-long events show clearly
    data["openadr"] = {"vtn_url": vtn_url, "poll_interval_s": POLL_S, "report_interval_s": 1,
                       "simple_levels_kw": {1: 10, 2: 20, 3: 40}, **openadr}
    return config_mod.parse(data)


@pytest.fixture
async def vtn():
    op = GridOperator(port=free_port(), poll_s=1.0)
    await op.start()
    try:
        yield op
    finally:
        await op.stop()


@contextlib.asynccontextmanager
async def daemon(cfg: Config, clock: Clock):
    d = Daemon(cfg, clock)
    stop = asyncio.Event()
    task = asyncio.create_task(d.run(stop))
    try:
        await asyncio.wait_for(d.ready.wait(), 20)
        yield d
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
    if task.exception():
        raise task.exception()


@contextlib.asynccontextmanager
async def hil_site(cfg: Config):
    clock = Clock(hil_of(cfg).start, 1.0)
    site = SimSite(cfg, clock)
    await site.start()
    try:
        yield site
    finally:
        await site.stop()


def simple(level: int, seconds: float) -> EventSpec:
    return EventSpec(signal="SIMPLE", type="level",
                     intervals=[IntervalSpec(duration_s=seconds, value=level)])


def soon(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def record_decisions(d: Daemon) -> list[Decision]:
    """Every decision the daemon's control cycle takes from now on (`Decision.ts`: the
    daemon's clock when it read the site)."""
    taken: list[Decision] = []
    step = d.cycle.step

    async def recording() -> Decision:
        decision = await step()
        taken.append(decision)
        return decision

    d.cycle.step = recording  # type: ignore[method-assign]
    return taken


def booked(d: Daemon, eid: str) -> bool:
    return any(i.id.startswith(f"oadr:{eid}:") for i in d.cycle.book.all())


def event_window(d: Daemon, eid: str) -> tuple[datetime, datetime]:
    """The event's window as the daemon booked it, on the daemon's clock."""
    mine = [i for i in d.cycle.book.all() if i.id.startswith(f"oadr:{eid}:")]
    assert mine, f"event {eid} is not in the instruction book"
    return min(i.start for i in mine), max(i.end for i in mine)


def carries(decision: Decision, eid: str) -> bool:
    return any(i.startswith(f"oadr:{eid}:") for i in decision.instructions)


def fresh(decisions: list[Decision]) -> list[Decision]:
    """Decisions taken on a new reading (a "hold" repeats the last one, instructions too)."""
    return [x for x in decisions if x.mode != "hold"]


async def registered(vtn: GridOperator, d: Daemon) -> str:
    await asyncio.wait_for(d.ven.registered.wait(), 10)
    ven_id = vtn.ven_id(d.ven.ven_name)
    assert ven_id is not None
    return ven_id


async def test_simple_event_is_opted_in_cuts_site_import_and_the_vtn_gets_reports(
        tmp_path, mosquitto, vtn):
    cfg = site_config(tmp_path, vtn.url, mosquitto.port)
    async with hil_site(cfg) as site, daemon(cfg, site.clock) as d:
        ven_id = await registered(vtn, d)
        decisions = record_decisions(d)
        await wait_for(lambda: decisions, 5, "a control cycle before the event")
        baseline = site.last.grid_kw
        assert baseline > 30, "scenario needs a site importing well above the shed amount"
        eid = vtn.issue(ven_id, simple(2, 3.0), soon(1.0))
        await wait_for(lambda: vtn.opt_of(eid) is not None, 5, "the VEN's opt response")
        assert vtn.opt_of(eid) == "optIn"
        await wait_for(lambda: booked(d, eid), 5, "the event in the instruction book")
        start, end = event_window(d, eid)
        assert (end - start).total_seconds() == pytest.approx(3.0, abs=0.01)
        await wait_for(lambda: site.last.grid_kw < baseline - 19, 5, "import cut by level 2")
        assert site.clock.now() >= start
        await wait_for(lambda: any(r.value < baseline - 15 for r in vtn.reports), 5,
                       "a TELEMETRY_USAGE report showing the cut")
        await wait_for(lambda: site.last.grid_kw > baseline - 3, 6, "import back after the end")
        assert site.clock.now() >= end
        await wait_for(lambda: d.ven.store.get(eid).status == "completed", 3, "event completed")
    # Cycle by cycle: nothing of the event before its start, the 20 kW of level 2 held
    # through its window, and its instruction in force nowhere else.
    taken = fresh(decisions)
    before = [x for x in taken if x.ts < start]
    during = [x for x in taken if start <= x.ts < end]
    assert before and during, (len(before), len(during))
    assert all(abs(x.bess_kw["bess1"]) < 1.5 and not carries(x, eid) for x in before), before
    assert all(carries(x, eid) for x in during), during
    assert all(x.bess_kw["bess1"] == pytest.approx(20, abs=1.5) for x in during), during
    assert all(start <= x.ts < end for x in taken if carries(x, eid))
    assert vtn.reports and all(r.ven_id == ven_id for r in vtn.reports)
    assert all(abs(r.value) < 200 for r in vtn.reports)  # kW, not W
    stored = EventStore(cfg.storage.dir / "openadr.sqlite").get(eid)
    assert stored.opt == "optIn" and stored.status == "completed"
    assert stored.requests[0].kw == 20 and stored.baseline_kw == pytest.approx(baseline, abs=3)
    assert stored.signals[0]["signal_name"] == "SIMPLE"


async def test_restart_mid_event_resumes_it_from_the_store_without_the_vtn(
        tmp_path, mosquitto, vtn):
    cfg = site_config(tmp_path, vtn.url, mosquitto.port)
    async with hil_site(cfg) as site:
        async with daemon(cfg, site.clock) as d:
            ven_id = await registered(vtn, d)
            baseline = site.last.grid_kw
            eid = vtn.issue(ven_id, simple(3, EVENT_S), soon(0.5))
            await wait_for(lambda: booked(d, eid), 5, "the event in the instruction book")
            start, end = event_window(d, eid)
            await wait_for(lambda: site.last.grid_kw < baseline - 38, 6, "import cut by level 3")
        await vtn.stop()  # nothing can be delivered again: the store alone must carry it
        after_stop = site.last.grid_kw
        assert after_stop > baseline - 3, "the stopped daemon left the battery in its safe state"
        d2 = Daemon(cfg, site.clock)
        resumed_start, resumed_end = event_window(d2, eid)  # from the store, before it runs
        assert (resumed_start - start).total_seconds() == pytest.approx(0, abs=0.05)
        assert (resumed_end - end).total_seconds() == pytest.approx(0, abs=0.05)
        decisions = record_decisions(d2)
        stop = asyncio.Event()
        task = asyncio.create_task(d2.run(stop))
        try:
            await wait_for(lambda: site.last.grid_kw < baseline - 38, EVENT_S, "cut resumed")
            assert not d2.ven.registered.is_set()  # resumed without the VTN
            await wait_for(lambda: site.last.grid_kw > baseline - 3, EVENT_S + 5,
                           "import back at the end")
            assert site.clock.now() >= end
        finally:
            stop.set()
            await asyncio.gather(task, return_exceptions=True)
    # The restarted daemon put the event back in force inside its window and only there,
    # and held it until the end.
    taken = fresh(decisions)
    resumed = [x for x in taken if carries(x, eid)]
    assert resumed, "the restarted daemon never put the event in force"
    assert all(start <= x.ts < end for x in resumed), resumed
    assert all(carries(x, eid) for x in taken if resumed[0].ts <= x.ts < end)


async def test_event_beyond_the_battery_is_opted_out_with_the_reason(
        tmp_path, mosquitto, vtn, caplog):
    cfg = site_config(tmp_path, vtn.url, mosquitto.port, soc_pct=12)  # 3.8 kWh above soc_min
    too_long = EventSpec(signal="LOAD_DISPATCH", type="delta",
                         intervals=[IntervalSpec(duration_s=3600, value=-30)])
    short = simple(1, 60.0)  # 10 kW for a minute: 0.2 kWh
    async with hil_site(cfg) as site, daemon(cfg, site.clock) as d:
        ven_id = await registered(vtn, d)
        out = vtn.issue(ven_id, too_long, soon(30))
        fits = vtn.issue(ven_id, short, soon(30))
        await wait_for(lambda: vtn.opt_of(out) and vtn.opt_of(fits), 5, "both opt responses")
        assert vtn.opt_of(out) == "optOut"
        assert vtn.opt_of(fits) == "optIn"
        book = [i.id for i in d.cycle.book.all()]
        assert not any(i.startswith(f"oadr:{out}:") for i in book)
        assert any(i.startswith(f"oadr:{fits}:") for i in book)
        reason = d.ven.store.get(out).reason
    assert "reduce 30.0 kW" in reason and "below 80%" in reason
    can = float(reason.split("can deliver ")[1].split(" kW")[0])
    assert 0 < can < 24  # energy-limited: ~3.8 kWh over an hour
    assert any(out in r.getMessage() and "optOut" in r.getMessage() and r.levelname == "WARNING"
               for r in caplog.records)
    assert math.isclose(EventStore(cfg.storage.dir / "openadr.sqlite").get(fits).requests[0].kw, 10)


async def test_event_cancelled_by_the_vtn_mid_way_leaves_the_book_and_releases_the_site(
        tmp_path, mosquitto, vtn):
    cfg = site_config(tmp_path, vtn.url, mosquitto.port)
    async with hil_site(cfg) as site, daemon(cfg, site.clock) as d:
        ven_id = await registered(vtn, d)
        baseline = site.last.grid_kw
        eid = vtn.issue(ven_id, simple(1, 60.0), soon(0.2))
        await wait_for(lambda: site.last.grid_kw < baseline - 9, 5, "import cut by level 1")
        vtn.cancel(ven_id, eid)
        await wait_for(lambda: d.ven.store.get(eid).status == "cancelled", 5, "the cancellation")
        assert not any(i.id.startswith(f"oadr:{eid}:") for i in d.cycle.book.all())
        await wait_for(lambda: site.last.grid_kw > baseline - 2, 5, "import back")
        assert d.ven.store.live(datetime.now(UTC)) == []


def pki(directory: Path) -> dict[str, Path]:
    """A CA, the VTN's certificate (for 127.0.0.1) and the VEN's, as PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def issue(cn: str, key, issuer: x509.Name, issuer_key, ca: bool = False, server: bool = False):
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(issuer)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(datetime.now(UTC) - timedelta(days=1))
             .not_valid_after(datetime.now(UTC) + timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        if not ca:
            b = b.add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("test CA", ca_key, name("test CA"), ca_key, ca=True)
    out = {"ca": directory / "ca.pem"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who, server in (("vtn", True), ("ven", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = issue(f"{who}.test", key, ca.subject, ca_key, server=server)
        out[f"{who}_cert"] = directory / f"{who}.pem"
        out[f"{who}_key"] = directory / f"{who}.key"
        out[f"{who}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[f"{who}_key"].write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    return out


async def test_tls_with_client_certificates_and_signed_messages(tmp_path, mosquitto):
    from openleadr.utils import certificate_fingerprint

    files = pki(tmp_path)
    ven_fp = certificate_fingerprint(files["ven_cert"].read_bytes())
    vtn_fp = certificate_fingerprint(files["vtn_cert"].read_bytes())
    op = GridOperator(port=free_port(), poll_s=1.0, tls=Tls(
        files["vtn_cert"], files["vtn_key"], files["ca"], {"ven-tls-1": ven_fp}))
    await op.start()
    try:
        assert op.url.startswith("https://127.0.0.1:")
        cfg = site_config(tmp_path, op.url, mosquitto.port, ven_id="ven-tls-1",
                          cert_file=str(files["ven_cert"]), key_file=str(files["ven_key"]),
                          ca_file=str(files["ca"]), vtn_fingerprint=vtn_fp)
        async with hil_site(cfg) as site, daemon(cfg, site.clock) as d:
            await asyncio.wait_for(d.ven.registered.wait(), 10)
            assert op.vens["ven-tls-1"]["fingerprint"] == ven_fp  # from the TLS handshake
            eid = op.issue("ven-tls-1", simple(1, 30.0), soon(20))
            await wait_for(lambda: op.opt_of(eid) is not None, 5, "the signed opt response")
            await wait_for(lambda: op.reports, 5, "a signed TELEMETRY_USAGE report")
        assert op.opt_of(eid) == "optIn"
        assert abs(op.reports[-1].value - site.last.grid_kw) < 5
    finally:
        await op.stop()
