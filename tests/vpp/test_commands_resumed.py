"""Commands about DR events the handler did not see arrive (resumed from dr.sqlite)."""

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from edge import config as config_mod
from edge.app.clock import Clock
from edge.control.instructions import InstructionBook
from edge.vpp.commands.handler import CommandHandler

ROOT = Path(__file__).resolve().parents[2]


class _Dr:
    """The DR manager's side of the seam: it knows events restored after a restart."""

    def __init__(self, known):
        self.known, self.cancelled = set(known), []

    def cancel(self, event_id, now):
        if event_id in self.known:
            self.cancelled.append(event_id)
            return True
        return False


def _handler(dr):
    cfg = config_mod.load(ROOT / "configs" / "demo.yaml")
    link = SimpleNamespace(topic=lambda t: f"pedf/v1/{cfg.site.id}/{t}")
    cycle = SimpleNamespace(book=InstructionBook(), image=None)
    clock = Clock(datetime(2026, 6, 22, 10, tzinfo=UTC), speed=1.0001)
    return CommandHandler(cfg, clock, cycle, outbox=None, link=link, dr=dr), cfg.site.id


def test_cancel_reaches_an_event_resumed_after_a_restart():
    dr = _Dr({"ev-9"})
    h, site = _handler(dr)
    acks, _ = h.handle(f"pedf/v1/{site}/cmd/cancel",
                       json.dumps({"cmd_id": "c-1", "event_id": "ev-9"}).encode())
    assert dr.cancelled == ["ev-9"]
    assert [a["status"] for a in acks] == ["accepted", "done"]


def test_cancel_of_an_unknown_event_is_rejected_with_a_reason():
    h, site = _handler(_Dr(set()))
    acks, _ = h.handle(f"pedf/v1/{site}/cmd/cancel",
                       json.dumps({"cmd_id": "c-2", "event_id": "nope"}).encode())
    assert acks[0]["status"] == "rejected" and "nothing active" in acks[0]["reason"]


def test_an_event_id_from_outside_becomes_one_plain_topic_level():
    from edge.app.daemon import topic_level

    assert topic_level("oadr:vtn/ev#1+x y") == "oadr:vtn_ev_1_x_y"
    assert topic_level("ev-1") == "ev-1"
