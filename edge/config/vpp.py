"""The VPP node's sections: park commands over MQTT, the OpenADR 2.0b VEN, demand-response
baselines and settlement, and carbon accounting."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from edge.config.model import _Model

CommandName = Literal["dispatch", "dr_event", "mode", "cancel", "ev_session"]


class VppConfig(_Model):
    """The MQTT command contract with the park platform (edge/vpp): which commands are
    honoured, what a command must keep to to be accepted, and the flex report."""

    commands: bool = Field(True, description="subscribe to <topic_prefix>/<site>/cmd/+")
    allow: list[CommandName] = ["dispatch", "dr_event", "mode", "cancel", "ev_session"]
    max_payload_bytes: int = Field(4096, ge=256, le=1_048_576)
    max_ahead_s: float = Field(
        172_800, gt=0, description="a window may start at most this far ahead (day-ahead: 2 d)")
    max_window_s: float = Field(86_400, gt=0, description="longest window a command may span")
    past_tolerance_s: float = Field(
        30, ge=0, description="a dispatch starting longer ago than this is refused as stale")
    groups: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]] = Field(
        default_factory=list, description="fleet groups: also take commands from "
        "<topic_prefix>/group/<id>/cmd/+ (this site's share given or computed by its rule)")
    flex_s: float = Field(60, gt=0, description="flex message period")
    flex_horizon_h: float = Field(4, gt=0, le=48, description="flex intervals cover this far")

    @field_validator("allow")
    @classmethod
    def _unique_commands(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each command may be listed once")
        return value


class OpenAdrConfig(_Model):
    """The OpenADR 2.0b VEN (edge/vpp/openadr.py); off unless a VTN URL is given."""

    vtn_url: str | None = Field(
        None, pattern=r"^https?://", description="e.g. http://vtn:8080/OpenADR2/Simple/2.0b")
    ven_name: str | None = Field(None, min_length=1, description="default: the site id")
    ven_id: str | None = Field(None, min_length=1, description="default: assigned by the VTN")
    poll_interval_s: float = Field(10.0, ge=0.2, le=3600)
    cert_file: Path | None = Field(None, description="PEM: TLS client cert, signs messages")
    key_file: Path | None = None
    key_passphrase: str | None = None
    ca_file: Path | None = Field(None, description="PEM: CA that signed the VTN's TLS cert")
    vtn_fingerprint: str | None = Field(None, description="check the VTN's message signatures")
    simple_levels_kw: dict[Literal[1, 2, 3], Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: {1: 10.0, 2: 20.0, 3: 40.0},
        description="SIMPLE level -> kW of grid import shed below the baseline (0 = normal)")
    report_interval_s: int = Field(10, ge=1, le=86400, description="TELEMETRY_USAGE period")

    @model_validator(mode="after")
    def _consistent(self) -> OpenAdrConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give cert_file and key_file together (or neither)")
        if self.cert_file is not None and self.ca_file is None:
            raise ValueError("with cert_file, give ca_file too: the CA of the VTN's certificate")
        if self.ca_file is not None and self.cert_file is None:
            raise ValueError("ca_file is used only with cert_file and key_file (without them the "
                             "VTN's https certificate is checked against the system CAs)")
        n = self.report_interval_s
        if (n < 60 and 60 % n) or (n >= 60 and n % 60):
            raise ValueError("report_interval_s must divide a minute (1, 2, 5, 10, 15, 30 ...) "
                             "or be whole minutes: reports run on the wall clock's cron")
        missing = sorted({1, 2, 3} - self.simple_levels_kw.keys())
        if missing:
            raise ValueError(f"simple_levels_kw needs levels 1, 2 and 3; missing {missing}")
        return self


class DrConfig(_Model):
    """Demand-response execution and M&V (edge/vpp/dr.py, baseline.py, mv.py; docs/domain.md §4).

    The baseline is computed on `baseline_on`: by default the PCC grid import, which is what
    the grid operator meters and settles. Working days are Monday-Friday minus `holidays`
    plus `working_days` (weekend days worked in exchange for a holiday, 调休)."""

    baseline: Literal["avg5", "realtime", "high5of10"] = Field(
        "avg5", description="avg5: same intervals of the 5 most recent normal working days; "
        "realtime: the 15 min before the response starts; high5of10: of the 10 eligible working "
        "days before D-1, the 5 with the highest daily maximum")
    baseline_on: Literal["import", "grid"] = Field(
        "import", description="import: PCC import (what the grid operator meters and settles); "
        "grid: import - export")
    avg_days: int = Field(5, ge=1, le=20, description="days averaged by avg5")
    high_days: int = Field(5, ge=1, le=20, description="days averaged by high5of10")
    high_window_days: int = Field(10, ge=1, le=30, description="eligible days high5of10 picks from")
    lookback_days: int = Field(45, ge=1, le=400, description="how far back to look for eligible days")
    holidays: list[date] = Field([], description="public holidays: never baseline days")
    working_days: list[date] = Field([], description="weekend days worked (调休)")
    ramp_in_s: float = Field(900, ge=0, le=7200, description="bound tightens linearly over this "
                             "before the start, so the site is at the level when the event begins")
    restore_s: float = Field(900, ge=0, le=7200, description="bound relaxed in steps over this "
                             "after the end, so loads and batteries do not all recover at once")
    restore_steps: int = Field(3, ge=1, le=20)
    target_ratio: float = Field(1.02, ge=1.0, le=1.2, description="aim at this share of the "
                                "declared amount: a margin for load steps between cycles")
    alarm_ratio: float = Field(0.8, ge=0, le=1.2, description="alarm when the projected response "
                               "ratio falls below this")
    min_response_ratio: float = Field(0.8, ge=0, le=1.2, description="opt in only when the site "
                                      "expects to deliver at least this share")
    penalty_below: float = Field(0.5, ge=0, le=1, description="settlement: below this share of "
                                 "the declared amount is penalised (unconfirmed default)")
    pay_cap: float = Field(1.2, ge=1, le=3, description="settlement: payment capped at this share")
    report_s: float = Field(60, ge=1, le=900, description="period of the dr/<event_id> reports")

    @model_validator(mode="after")
    def _calendar(self) -> DrConfig:
        both = sorted(set(self.holidays) & set(self.working_days))
        if both:
            raise ValueError(f"{', '.join(map(str, both))} listed in both holidays and "
                             "working_days; keep each date in one list")
        if self.high_days > self.high_window_days:
            raise ValueError("high_days must be <= high_window_days (it picks from the window)")
        return self


class CarbonConfig(_Model):
    """Grid emission factors for carbon accounting (docs/domain.md §6). MEE/NBS publish them
    yearly in three versions; name the one you use so reports can be audited."""

    factor_kg_per_kwh: float = Field(0.5366, ge=0, le=2, description="grid emission factor")
    factor_year: int = Field(2022, ge=2000, le=2100)
    factor_version: Literal["average", "excl_market_nonfossil", "fossil"] = "average"
    factor_region: str = "national"
    green_import_share: float = Field(
        0.0, ge=0, le=1, description="share of grid import bought as green power (contracts, "
        "certificates); counted zero-emission")
    residual_factor_kg_per_kwh: float | None = Field(
        None, ge=0, le=2, description="factor for the rest of the import when green power is "
        "bought: the 'excluding market-traded non-fossil' version")

    @model_validator(mode="after")
    def _residual_with_green(self) -> CarbonConfig:
        if self.green_import_share > 0 and self.residual_factor_kg_per_kwh is None:
            raise ValueError("green_import_share > 0 needs residual_factor_kg_per_kwh (the "
                             "'excluding market-traded non-fossil' factor), or the green power "
                             "would be counted twice")
        return self

    @property
    def import_factor(self) -> float:
        """kg CO2 per kWh of grid import, after the green share is taken out."""
        if self.green_import_share > 0:
            return (1 - self.green_import_share) * float(self.residual_factor_kg_per_kwh)
        return self.factor_kg_per_kwh

