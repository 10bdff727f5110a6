"""Test doubles shared across the suite (unit tests only; integration tests use real parts)."""

from __future__ import annotations

from datetime import UTC, datetime

from edge.app.clock import Clock

DEFAULT_START = datetime(2026, 6, 22, tzinfo=UTC)


class ManualClock(Clock):
    """Simulated seconds that advance only when the test sets `t`: the poll, the physics
    and the decision of one step all see one instant."""

    def __init__(self, start: datetime | str = DEFAULT_START, speed: float = 1.0) -> None:
        if isinstance(start, str):
            start = datetime.fromisoformat(start)
        super().__init__(start=start, speed=speed)
        self.t = 0.0  # simulated seconds since start

    def elapsed_s(self) -> float:
        return self.t
