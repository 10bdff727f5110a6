"""The write phase: a setpoint goes to its device when it changed by more than the role's
deadband, when the last write failed, or before the device's revert timer would expire;
writes that make room (a shed) go first and writes that add load (a restore) last."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from drivers.base import Device
from edge.control.decide import Decision
from edge.roles import Memory, role_of

log = logging.getLogger("edge.cycle")

LIMIT_SLACK_KW = 0.05  # below this a limit excursion is measurement noise, not a violation


def limit_violated(image, decision: Decision, grid_id: str) -> bool:
    """The PCC reading of this cycle is beyond an import or export bound, or above the
    plan's peak cap (a 15-min peak is paid on every tenth of a kW)."""
    b = decision.bounds
    if image is None or not image.good(grid_id) or image.devices[grid_id].failed_polls:
        return False
    kw = image.value(grid_id, "power_kw")
    cap = min(b.import_limit_kw, b.soft_import_cap_kw)
    return kw > cap + LIMIT_SLACK_KW or kw < -b.export_limit_kw - LIMIT_SLACK_KW


class Writer:
    def __init__(self, config, devices: dict[str, Device],
                 on_error: Callable[[str], None] = lambda dev_id: None) -> None:
        self.config = config
        self.devices = devices
        self.on_error = on_error
        self.writers = [d for d in config.devices if role_of(d).controls(d)]
        self._sent: set[str] = set()  # written since the last poll, no failure yet
        self._refusing: set[str] = set()  # its last write checked by a poll was refused

    def due(self, mem: Memory, dev_id: str, value: float, revert_s: int, now_s: float,
            deadband: float) -> bool:
        w = mem.written[dev_id]
        if w.failed or w.value is None:
            return True
        if abs(value - w.value) > deadband or math.isnan(value) != math.isnan(w.value):
            return True  # NaN: a battery forming an island's grid (no power setpoint)
        return now_s - w.at_s >= revert_s * self.config.control.rewrite_margin

    def jobs(self, decision: Decision, mem: Memory, now_s: float, violated: bool,
             force: bool = False) -> list[list[tuple]]:
        """The (device, value) pairs due now, in three phases (see Role.write_phase)."""
        # The deadband saves writes, but a limit being broken right now outranks that: then
        # any correction larger than measurement noise is written (docs/domain.md §3, duty 4).
        configured = LIMIT_SLACK_KW if violated else self.config.control.deadband_kw
        phases: list[list] = [[], [], []]
        for d in self.writers:
            role = role_of(d)
            v = decision.setpoints.get(d.role, {}).get(d.id)
            if v is None or not (force or self.due(mem, d.id, v, d.revert_s, now_s,
                                                     role.deadband(configured, d))):
                continue
            phases[role.write_phase(d, v, mem)].append((d, v))
        return phases

    async def write(self, decision: Decision, mem: Memory, now_s: float, timeout: float,
                    violated: bool, record: Callable[[str, float | None], None],
                    force: bool = False) -> None:
        """Send what is due, phase by phase; `record(device id, value or None on failure)`
        is called as each write completes."""
        for jobs in self.jobs(decision, mem, now_s, violated, force):
            await asyncio.gather(*(self._write_one(d, v, timeout, mem, record) for d, v in jobs))

    def collect_refused(self, mem: Memory, record: Callable[[str, float | None], None]) -> None:
        """Writes sent without a read-back request that the device's poll since found not
        taken (drivers.modbus.pending): failed writes, as a read-back would have made them,
        so they are counted, logged and retried alike. Called after the poll, before
        deciding: the device answered, so it stays good; only its setpoint is owed."""
        for dev in self.writers:
            refused = getattr(self.devices.get(dev.id), "refused_write", None)
            why = refused() if refused is not None else None
            if why:
                value = mem.written[dev.id].value
                # Told once while the device keeps refusing (each retry "succeeds" on the wire).
                self._failed(dev, math.nan if value is None else value, why, mem, record,
                             quiet=dev.id in self._refusing)
                self._refusing.add(dev.id)
            elif dev.id in self._sent:
                self._refusing.discard(dev.id)
        self._sent.clear()

    def _failed(self, dev, value: float, why: str, mem: Memory,
                record: Callable[[str, float | None], None], quiet: bool = False) -> None:
        if not quiet and not mem.written[dev.id].failed:
            log.warning("device %s: writing %s failed: %s; retried every cycle, and "
                        "its own revert timer takes it to its safe state if none gets "
                        "through (check its link if this repeats)", dev.id,
                        role_of(dev).setpoint_text(dev, value), why)
        self.on_error(dev.id)
        record(dev.id, None)

    async def _write_one(self, dev, value: float, timeout: float, mem: Memory,
                         record: Callable[[str, float | None], None]) -> None:
        try:
            await asyncio.wait_for(role_of(dev).write(self.devices[dev.id], value, dev.revert_s),
                                   timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one device's fault must not stop the others
            why = (f"no answer within {timeout:.2g} s" if isinstance(exc, TimeoutError)
                   else str(exc) or type(exc).__name__)
            self._failed(dev, value, why, mem, record)
            return
        self._sent.add(dev.id)
        record(dev.id, value)
