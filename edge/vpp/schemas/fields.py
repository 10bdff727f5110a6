"""The field types the MQTT messages share: ids that end up in topics, kW, timestamps."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

# Ids end up in topics (dr/<event_id>) and logs: no '/', '+', '#', '$', spaces or controls.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
CmdId = Annotated[str, Field(pattern=ID_PATTERN, description="unique per command; 1-64 of A-Z a-z 0-9 _ . : - "
                             "(first alphanumeric)")]
EventId = Annotated[str, Field(pattern=ID_PATTERN, description="DR event id, same alphabet as cmd_id")]
# A sanity range only: each site's own limits are checked when a command arrives.
Kw = Annotated[float, Field(ge=-100_000, le=100_000)]
Stamp = Annotated[AwareDatetime, Field(description="ISO 8601 with a UTC offset, e.g. "
                                       "2026-06-22T04:00:00Z")]
CommandName = Literal["dispatch", "dr_event", "mode", "cancel"]
Mode = Literal["auto", "hold", "local"]
