"""What every command shares: loading a site config (every problem at once, exit 2), its
one-screen summary, logging, and stopping on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from drivers.fileerrors import EXIT_INVALID, refuse
from edge import config as config_mod
from edge.config import Config
from edge.roles import role_of

EXIT_RUNTIME, EXIT_CONFIG, EXIT_KERNEL = 1, EXIT_INVALID, 3
EXIT_NO_ANSWER, EXIT_NOT_SUNSPEC = 4, 5
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it


def _load(path: str) -> Config:
    """The site config, or exit 2 with every problem; the simulator's sections (`sim:`,
    `hil:`) are checked here too, by the simulator, so the file stays valid as one."""
    from drivers.registry import BUILDERS
    from edge.app.devices import check_maps
    from hil.config import problems as sim_problems

    try:
        cfg = config_mod.load(path)
        missing = sim_problems(cfg)
        missing += [f"devices[{i}].protocol: {d.protocol} has no driver yet "
                    f"(available: {', '.join(sorted(BUILDERS))})"
                    for i, d in enumerate(cfg.devices) if d.protocol not in BUILDERS]
        missing += check_maps(cfg)
        if missing:
            raise config_mod.ConfigError(path, missing)
        return cfg
    except config_mod.ConfigError as exc:
        raise SystemExit(refuse(exc, "configuration")) from None


def _summary(cfg: Config) -> str:
    c = cfg.control
    lines = [
        f"site {cfg.site.id} ({cfg.site.name or 'unnamed'}), {cfg.site.timezone}",
        f"devices ({len(cfg.devices)}):",
    ]
    for d in cfg.devices:
        detail = role_of(d).summary(d)
        if d.protocol.startswith("dlt645-"):
            where = f"address {d.address}"
        else:
            where = f"unit {d.unit_id}" + (f" map {d.map}" if d.map else "")
        bus = f"{d.host}:{d.port}"
        if d.serial is not None and d.endpoint[0] == "serial":
            s = d.serial
            bus = f"{s.port} {s.baudrate} {s.bytesize}{s.parity}{s.stopbits}"
        lines.append(f"  {d.id:<10} {d.role:<8} {d.protocol} {bus} {where}  {detail}")
    imp = "none" if c.import_limit_kw is None else f"{c.import_limit_kw:g} kW"
    exp = "none" if c.export_limit_kw is None else f"{c.export_limit_kw:g} kW"
    lines += [
        f"control: every {c.cycle_s:g} s; {', '.join(c.functions)}; import limit {imp}; export limit {exp}",
        f"tariff: {len(cfg.tariff.periods)} periods, {cfg.tariff.currency}, export {cfg.tariff.export_price:g}/kWh",
        *_mqtt_lines(cfg),
        f"state: {cfg.storage.dir}",
    ]
    oa = cfg.openadr
    if oa.vtn_url:
        levels = ", ".join(f"{k}: {v:g}" for k, v in sorted(oa.simple_levels_kw.items()))
        lines.append(f"openadr: VEN {oa.ven_name or cfg.site.id} -> {oa.vtn_url}, poll every "
                     f"{oa.poll_interval_s:g} s, SIMPLE shed kW {{{levels}}}, "
                     f"{'TLS + signed' if oa.cert_file else 'no certificates'}")
    api = cfg.api
    if api.enabled:
        token = f"commands with the token in {api.token_file}" if api.token_file else \
            "no token_file: commands refused"
        lines.append(f"api: http://{api.host}:{api.port}/api/v1 and /metrics; {token}")
    return "\n".join(lines)


def _mqtt_lines(cfg: Config) -> list[str]:
    """Where the link goes and what it keeps to: MQTT 3.1.1 with QoS 1 publishes, which a
    NATS front end needs (it refuses MQTT 5 and drops a connection on a QoS 2 publish)."""
    m = cfg.mqtt
    where = ", ".join(f"{h}:{p}" for h, p in m.brokers)
    lines = [f"mqtt: {where} {m.topic_prefix}/{cfg.site.id}/... every {m.telemetry_s:g} s; "
             f"MQTT 3.1.1, QoS 1 (subscriptions QoS {m.subscribe_qos})"]
    if len(m.brokers) > 1:
        lines.append(f"  failover: {len(m.brokers)} brokers tried in this order on a failed "
                     "connect; a connection stays on its broker; the outbox re-sends what "
                     "was not acknowledged")
    if m.broker == "nats":
        lines.append("  broker nats: topics without '.', spaces, '*' or '>' (prefix and site "
                     "id checked; DR event ids mapped to '_' in topics); retained status "
                     "needs JetStream on the servers")
        if m.subscribe_qos:
            lines.append("  subscriptions at QoS 1: each is a JetStream consumer made at every "
                         "connect; for thousands of sites set mqtt.subscribe_qos: 0 (a command "
                         "without an ack is one the platform knows was not taken)")
    elif len(m.brokers) > 1:
        lines.append("  on a NATS cluster set mqtt.broker: nats (its MQTT front end forbids "
                     "'.' and spaces in topics)")
    for gid in cfg.vpp.groups:
        lines.append(f"  group commands: {m.topic_prefix}/group/{gid}/cmd/+")
    return lines


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    for noisy in ("apscheduler", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The drivers report every failed request with its device; pymodbus's own lines are
    # about late replies to requests the cycle abandoned, which it discards as it should.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def _stop_on_signals(stop: asyncio.Event, got: list[int] | None = None) -> None:
    """SIGTERM and SIGINT set `stop` (a clean shutdown); `got` collects which came."""
    loop = asyncio.get_running_loop()

    def stopped(sig: int) -> None:
        if got is not None:
            got.append(sig)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped, sig)

