"""Group commands: one message to a whole fleet group, `<prefix>/group/<gid>/cmd/dispatch`,
turned by each site into its own dispatch, which is then judged and acknowledged (on the
site's own `ack` topic) exactly like one sent to the site alone.

A platform with 1,000 sites in a group sends one message instead of 1,000. Each site's
share is either
- given: `shares_kw: {site_id: kW}` (the aggregator split it; practical for small groups,
  since the payload grows with the group and must fit `vpp.max_payload_bytes`), or
- computed by the rule `pro_rata_flex`: share = `fleet_kw` × this site's declared flex /
  `fleet_flex_kw`, where the declared flex is the first interval of the last flex message
  this site sent (up_kw to reduce, down_kw to increase) and `fleet_flex_kw` the sum the
  aggregator holds of the same messages. The shares then add up to `fleet_kw` without the
  aggregator naming a site, and no site is asked for more than it offered.
A site without a share (not in `shares_kw`, or offering nothing) stays silent: the
command was not for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge.vpp.commands.parse import Rejected, parse_json, validation_reason
from edge.vpp.schemas.fields import CmdId, Stamp

GROUP_COMMANDS = ("dispatch",)


class GroupDispatch(BaseModel):
    """A fleet dispatch: move every site's PCC below (reduce) or above (increase) its power
    at receipt by its share, for the window."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    cmd_id: CmdId
    sent: Stamp | None = None
    start: Stamp | None = None
    end: Stamp | None = None
    duration_s: float | None = Field(None, gt=0, le=10_000_000)
    direction: Literal["reduce", "increase"]
    shares_kw: dict[str, float] | None = Field(None, description="site id -> kW, given")
    rule: Literal["pro_rata_flex"] | None = None
    fleet_kw: float | None = Field(None, gt=0, le=1e9, description="the fleet's target")
    fleet_flex_kw: float | None = Field(None, gt=0, le=1e9,
                                        description="the flex the fleet declared for it")

    @model_validator(mode="after")
    def _one_way(self) -> GroupDispatch:
        if (self.shares_kw is None) == (self.rule is None):
            raise ValueError("give shares_kw or rule, not both and not neither")
        if self.rule is not None and (self.fleet_kw is None or self.fleet_flex_kw is None):
            raise ValueError("rule pro_rata_flex needs fleet_kw and fleet_flex_kw")
        if self.shares_kw is not None and any(not 0 <= v <= 100_000
                                              for v in self.shares_kw.values()):
            raise ValueError("each share in shares_kw must be 0..100000 kW")
        return self


@dataclass(frozen=True, slots=True)
class SiteCommand:
    """The site's own command made from a group command: judged as `cmd/<name>`."""

    name: str
    cmd_id: str
    payload: bytes
    extra: dict[str, Any]  # added to the site's acks: the group and the share


def group_of(topic: str, prefix: str) -> tuple[str, str] | None:
    """(group id, command name) for `<prefix>/group/<gid>/cmd/<name>`, else None."""
    head = f"{prefix}/group/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head):].split("/")
    if len(parts) != 3 or parts[1] != "cmd":
        return None
    return parts[0], parts[2]


def site_command(gid: str, name: str, payload: bytes, site_id: str,
                 declared: dict[str, Any] | None, max_bytes: int) -> SiteCommand | None:
    """This site's dispatch from a group command; None when it has no share in it.
    Rejected (with the reason the ack carries) when the command is malformed or the rule
    needs a flex this site has not declared yet."""
    if name not in GROUP_COMMANDS:
        raise Rejected(f"unknown group command {name[:64]!r}; known: {', '.join(GROUP_COMMANDS)}")
    if len(payload) > max_bytes:
        raise Rejected(f"payload of {len(payload)} bytes exceeds vpp.max_payload_bytes "
                       f"({max_bytes})")
    try:
        raw = parse_json(payload)
    except ValueError as exc:
        raise Rejected(f"not valid JSON: {str(exc)[:120]}") from None
    try:
        cmd = GroupDispatch.model_validate_json(payload, strict=True)
    except ValidationError as exc:
        raise Rejected(validation_reason(exc)) from None
    key = "up_kw" if cmd.direction == "reduce" else "down_kw"
    if cmd.shares_kw is not None:
        share = cmd.shares_kw.get(site_id)
        if share is None:
            return None
    else:
        if declared is None or declared.get(key) is None:
            raise Rejected("rule pro_rata_flex needs this site's declared flex; it has sent "
                           "no flex message yet")
        offered = float(declared[key])
        share = min(cmd.fleet_kw * offered / cmd.fleet_flex_kw, offered)  # type: ignore[operator]
    if share <= 0:
        return None
    doc: dict[str, Any] = {"cmd_id": cmd.cmd_id,
                           "grid_delta_kw": round(-share if cmd.direction == "reduce" else share, 3)}
    for k in ("sent", "start", "end", "duration_s"):
        if raw.get(k) is not None:
            doc[k] = raw[k]  # as sent: the site judges the same window
    extra = {"group": gid, "share_kw": round(share, 3)}
    return SiteCommand(name, cmd.cmd_id, json.dumps(doc, separators=(",", ":")).encode(), extra)
