"""The island settings of a microgrid, given on its PCC breaker (`island:`)."""

from __future__ import annotations

from pydantic import Field

from edge.config.model import _Model


class IslandParams(_Model):
    """When the grid counts as lost and as back, how closely the island must match it before
    the breaker closes, and what the batteries keep for the critical loads."""

    nominal_v: float = Field(230.0, gt=0, le=100_000, description="line-to-neutral nominal voltage")
    nominal_hz: float = Field(50.0, ge=45, le=65)
    v_band_pct: float = Field(10.0, gt=0, le=50, description="grid lost outside nominal ± this")
    hz_band: float = Field(0.5, gt=0, le=5, description="grid lost outside nominal ± this (Hz)")
    detect_s: float = Field(2.0, ge=0, le=60, description="out of band this long: grid lost")
    transfer_poll_s: float = Field(0.2, gt=0, le=5, description="during the changeover (the "
                                   "breaker opening, the PCS forming) the grid state is looked "
                                   "at this often rather than once per cycle")
    return_s: float = Field(300.0, ge=0, le=3600, description="back in band this long before "
                            "resynchronising (grid codes ask for minutes)")
    sync_v_pct: float = Field(5.0, gt=0, le=20, description="resync window: voltage difference")
    sync_hz: float = Field(0.2, gt=0, le=2, description="resync window: frequency difference")
    sync_deg: float = Field(10.0, gt=0, le=60, description="resync window: phase difference")
    resync_timeout_s: float = Field(300.0, ge=10, le=7200, description="no sync within this: alarm")
    backup_hours: float = Field(2.0, ge=0, le=72, description="the batteries keep what the "
                                "critical loads need for this long (a hard reserve)")
    restore_hours: float = Field(0.25, ge=0, le=24, description="islanded: a shed load returns "
                                 "only while the energy above the reserve covers it this long")

    def in_band(self, v: float, hz: float) -> bool:
        return (abs(v - self.nominal_v) <= self.v_band_pct / 100 * self.nominal_v
                and abs(hz - self.nominal_hz) <= self.hz_band)

    def live(self, v: float) -> bool:
        """A bus with voltage on it (above 20 % of nominal): never close onto it unsynchronised."""
        return v > 0.2 * self.nominal_v
