"""The requests a register-map device (drivers.modbus.mapped) sends: its points merged into
as few reads as the map allows, and its control points grouped into writes."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.modbus.regmap import BIT_FUNCTIONS, MapPoint

# On a serial line every register a read spans costs bus time (2 bytes, about 2 ms at
# 9600 baud), where a second request costs its framing and the device's turnaround (tens
# of ms): bridging a long gap there is slower than reading the runs apart.
RTU_MAX_GAP = 8


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: readable points of one function (bits: coils or discrete inputs,
    one address per point), contiguous unless the map lets reads bridge gaps."""

    function: str
    address: int
    count: int
    points: tuple[MapPoint, ...]

    @property
    def bridged(self) -> bool:
        """It spans unmapped registers."""
        return self.count > sum(p.size for p in self.points)

    def covers(self, function: str, address: int, count: int) -> bool:
        return (function == self.function and self.address <= address
                and address + count <= self.address + self.count)


def plan_reads(points: list[MapPoint], max_read: int = 120, max_gap: int = 0) -> list[Block]:
    """Points merged into as few requests as `max_read` allows. Only runs at most `max_gap`
    unmapped registers apart are merged (default: none, gap-free runs only), as unmapped
    registers may answer ILLEGAL_ADDRESS."""
    blocks: list[Block] = []
    for fn in ("holding", "input", *BIT_FUNCTIONS):
        run: list[MapPoint] = []
        for p in sorted((p for p in points if p.function == fn and p.readable),
                        key=lambda p: p.address):
            if run and (p.address - run[-1].end > max_gap or p.end - run[0].address > max_read):
                blocks.append(Block(fn, run[0].address, run[-1].end - run[0].address, tuple(run)))
                run = []
            run.append(p)
        if run:
            blocks.append(Block(fn, run[0].address, run[-1].end - run[0].address, tuple(run)))
    return blocks


_WRITE_ORDER = {"revert": 0, "setpoint": 1, "limit": 1, "enable": 2, "control_mode": 2}


def write_groups(items: list[tuple[MapPoint, list[int]]]) -> list[list[tuple[MapPoint, list[int]]]]:
    """Encoded control points grouped into requests: contiguous ones of one function
    together, the command last (a device that runs on `enable` should see its setpoint
    first)."""
    items = sorted(items, key=lambda it: (it[0].function, it[0].address))
    groups: list[list[tuple[MapPoint, list[int]]]] = []
    for p, regs in items:
        if (groups and groups[-1][-1][0].end == p.address
                and groups[-1][-1][0].function == p.function):
            groups[-1].append((p, regs))
        else:
            groups.append([(p, regs)])
    groups.sort(key=lambda g: max(_WRITE_ORDER.get(p.key, 1) for p, _ in g))
    return groups
