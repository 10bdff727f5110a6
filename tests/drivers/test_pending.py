"""The bookkeeping of writes left to the next poll: only a read sent after a write has
completed checks it, a newer write to the same registers replaces it, and what no read
covered is left for a read-back."""

from __future__ import annotations

from drivers.modbus.pending import PendingChecks


def test_only_a_read_sent_after_the_write_completed_checks_it():
    checks = PendingChecks()
    before = checks.mark()  # a read on the wire while the write goes out
    checks.forget("holding", 100, 2)
    checks.expect("holding", 100, [1, 2], "pcs: setpoint at 100")
    checks.check("holding", 100, [0, 0], before)
    assert checks.take_refused() is None and checks.left(checks.mark())
    checks.check("holding", 98, [0, 0, 1, 3], checks.mark())
    assert checks.take_refused() == ("pcs: setpoint at 100: the device did not take the command: "
                                     "wrote [1, 2], the next poll read [1, 3]")
    assert not checks.left(checks.mark()) and checks.take_refused() is None


def test_a_newer_write_replaces_what_an_older_one_left_and_a_partial_read_checks_nothing():
    checks = PendingChecks()
    checks.expect("holding", 100, [1, 2], "old")
    checks.forget("holding", 101, 1)  # a newer write to one of its registers
    checks.expect("holding", 101, [5], "new")
    checks.check("holding", 100, [9, 5], checks.mark())
    assert checks.take_refused() is None  # "old" is gone, "new" was taken
    checks.expect("coil", 0, [1], "switch")
    checks.check("holding", 0, [0], checks.mark())  # another table
    checks.check("coil", 1, [0], checks.mark())  # does not cover it
    assert [e.what for e in checks.left(checks.mark())] == ["switch"]
