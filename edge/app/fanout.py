"""What the daemon's services see of the control cycle: the image and decision of the last
finished cycle (published once after each cycle, so no service reads a half-built one or
reaches into the cycle), the instruction book they write to, and `wake` for instructions
that must act within one cycle time rather than one period."""

from __future__ import annotations

from collections.abc import Callable

from edge.control.decide import Decision
from edge.control.instructions import InstructionBook
from edge.image.image import ProcessImage


class SiteView:
    def __init__(self, book: InstructionBook, wake: Callable[[], None] = lambda: None) -> None:
        self.book = book
        self.image: ProcessImage | None = None
        self.decision: Decision | None = None
        self._wake = wake

    @property
    def demands(self) -> tuple:
        """The energy demands (EV sessions) the last decision reported, for the planner."""
        return self.decision.demands if self.decision is not None else ()

    def publish(self, image: ProcessImage, decision: Decision) -> None:
        self.image, self.decision = image, decision

    def wake(self) -> None:
        self._wake()
