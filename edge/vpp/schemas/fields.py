"""The field types the MQTT messages share: ids that end up in topics, kW, timestamps."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BeforeValidator, Field

# Ids end up in topics (dr/<event_id>) and logs: no '/', '+', '#', '$', spaces or controls.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
CmdId = Annotated[str, Field(pattern=ID_PATTERN, description="unique per command; 1-64 of A-Z a-z 0-9 _ . : - "
                             "(first alphanumeric)")]
EventId = Annotated[str, Field(pattern=ID_PATTERN, description="DR event id, same alphabet as cmd_id")]
# As the configuration spells a device id (edge/config/base.py DeviceBase.id).
DeviceId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$",
                                description="a device id of the site's configuration")]
# A sanity range only: each site's own limits are checked when a command arrives.
Kw = Annotated[float, Field(ge=-100_000, le=100_000)]

# ISO 8601 extended format with an explicit offset: date, 'T', hh:mm[:ss[.fff]], Z or ±hh:mm.
STAMP_PATTERN = (r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?"
                 r"(Z|[+-]\d{2}:\d{2})$")
_STAMP = re.compile(STAMP_PATTERN)


def _iso_text(value: object) -> object:
    """Only the contract's text form: pydantic alone would also take a Unix time (even as a
    numeric string), a space for the 'T' or a compact offset."""
    if isinstance(value, datetime):
        return value  # built by the daemon itself, not parsed
    if isinstance(value, str) and _STAMP.match(value):
        try:
            return datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a valid time: {exc}") from None
    raise ValueError(f"{repr(value)[:40]} is not an ISO 8601 time with its timezone (Z or a "
                     "UTC offset ±hh:mm); write e.g. 2026-06-22T04:00:00Z or "
                     "2026-06-22T12:00:00+08:00")


Stamp = Annotated[AwareDatetime, BeforeValidator(_iso_text),
                  Field(description="ISO 8601 with a UTC offset, e.g. 2026-06-22T04:00:00Z",
                        json_schema_extra={"pattern": STAMP_PATTERN})]
CommandName = Literal["dispatch", "dr_event", "mode", "cancel", "ev_session"]
Mode = Literal["auto", "hold", "local"]
