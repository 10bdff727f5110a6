"""What devices sharing a serial bus or a TCP connection must agree on, checked before the
daemon starts: one framing and line setting per port, one timeout and one limit on requests
in flight per shared endpoint, and every poll inside the cycle's deadline."""

from __future__ import annotations

import math

from edge.config.base import poll_deadline_s

# Framing families: units of one family may share a port or a bus, two families never.
_BUS_FAMILY = {"sunspec-rtu": "Modbus RTU", "modbus-rtu": "Modbus RTU",
               "dlt645-serial": "DL/T 645", "sunspec-tcp": "Modbus TCP",
               "modbus-tcp": "Modbus TCP", "dlt645-tcp": "DL/T 645"}


def bus_problems(devices: list, cycle_s: float) -> list[str]:
    """What devices sharing a bus or a connection must agree on, and what a poll must fit:
    one line setting and one framing per serial port, one timeout per shared endpoint, each
    timeout inside the poll deadline (half of it where neighbours share the endpoint), and
    the poll round of a DL/T 645 serial bus inside the deadline."""
    deadline = poll_deadline_s(cycle_s)
    problems: list[str] = []
    groups: dict[tuple, list[int]] = {}
    for i, d in enumerate(devices):
        groups.setdefault(d.endpoint, []).append(i)

    def who(i: int) -> str:
        return f"devices[{i}] ({devices[i].id})"

    for key, members in groups.items():
        where = f"serial port {key[1]}" if key[0] == "serial" else f"{key[0]}:{key[1]}"
        units = {devices[i].unit_id: i for i in members}
        for i in members:
            bms = getattr(devices[i], "bms", None)
            if bms is not None and units.get(bms.unit_id, i) != i:
                problems.append(
                    f"devices[{i}].bms.unit_id: {bms.unit_id} on {where} is "
                    f"{who(units[bms.unit_id])}'s unit id; give the BMS a free one")
        first = devices[members[0]]
        for i in members[1:]:
            d = devices[i]
            a = _BUS_FAMILY.get(first.protocol, first.protocol)
            b = _BUS_FAMILY.get(d.protocol, d.protocol)
            if a != b:
                problems.append(
                    f"{who(members[0])} ({first.protocol}) and {who(i)} ({d.protocol}) share "
                    f"{where}: {a} and {b} cannot share one bus or port (each would read the "
                    "other's frames as noise); put them on separate ports")
                continue
            if key[0] == "serial":
                for field in ("baudrate", "parity", "stopbits", "bytesize"):
                    x, y = getattr(first.serial, field), getattr(d.serial, field)
                    if x != y:
                        problems.append(
                            f"{who(members[0])} and {who(i)} share {where} but differ in "
                            f"serial.{field} ({x} vs {y}): one bus has one line setting; set the "
                            f"same serial.{field} on both")
            if d.timeout_s != first.timeout_s:
                problems.append(
                    f"{who(members[0])} and {who(i)} share {where} but differ in timeout_s "
                    f"({first.timeout_s:g} vs {d.timeout_s:g} s): the shared connection has one "
                    "timeout; set the same timeout_s on both")
            if d.max_in_flight != first.max_in_flight:
                problems.append(
                    f"{who(members[0])} and {who(i)} share {where} but differ in max_in_flight "
                    f"({first.max_in_flight} vs {d.max_in_flight}): the shared connection has "
                    "one limit on requests in flight; set the same max_in_flight on both")
        limit = deadline / 2 if len(members) > 1 else deadline
        for i in members:
            t = devices[i].timeout_s
            if len(members) == 1 and t >= deadline:
                problems.append(
                    f"devices[{i}].timeout_s: {t:g} s does not fit the poll deadline "
                    f"{deadline:g} s (0.8 x control.cycle_s, at least 0.2 s): the cycle would cut "
                    "a silent device "
                    f"off before its own timeout; use timeout_s <= {deadline / 2:g} or raise "
                    "control.cycle_s")
            elif len(members) > 1 and t > limit:
                others = ", ".join(devices[j].id for j in members if j != i)
                problems.append(
                    f"devices[{i}].timeout_s: {t:g} s is more than half the poll deadline "
                    f"{deadline:g} s on {where}, shared with {others}: one silent unit would leave "
                    f"its neighbours no time in the cycle; use timeout_s <= {limit:g} or raise "
                    "control.cycle_s")
        if key[0] == "serial" and first.protocol == "dlt645-serial" and not any(
                "cannot share" in p and where in p for p in problems):
            from drivers.dlt645.frame import poll_round_s

            need = poll_round_s(len(members), first.serial.baudrate, first.serial.bytesize,
                                first.serial.parity != "N", first.serial.stopbits)
            if need > deadline:
                problems.append(
                    f"{where}: {len(members)} DL/T 645 meters at {first.serial.baudrate} bit/s "
                    f"need about {need:.2f} s per poll (power from each, one slow value), more "
                    f"than the poll deadline {deadline:g} s; raise serial.baudrate if the meters "
                    f"allow, split them across ports, or set control.cycle_s >= "
                    f"{math.ceil(need / 0.8 * 10) / 10:g}")
    return problems

