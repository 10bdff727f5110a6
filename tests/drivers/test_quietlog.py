"""Episode: the first failure, then summaries at most every `every_s`, then the recovery."""

import logging

from drivers.quietlog import Episode, span


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def episode(caplog, clock: Clock) -> Episode:
    caplog.set_level(logging.INFO, logger="test.quietlog")
    return Episode(logging.getLogger("test.quietlog"), "down: %(reason)s",
                   "still down after %(since)s, %(count)d failures, %(more)d since %(gap)s ago: "
                   "%(reason)s", "up again after %(since)s (%(count)d failures)",
                   every_s=600, clock=clock)


def test_one_line_when_it_fails_a_summary_per_interval_and_one_when_it_recovers(caplog):
    clock = Clock()
    ep = episode(caplog, clock)
    for i in range(720):  # 12 min of one failure a second
        ep.failed(f"refused {i}")
        clock.t += 1
    ep.ok()
    ep.ok()  # nothing to recover from any more
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("WARNING", "down: refused 0"),
        ("WARNING", "still down after 10 min, 601 failures, 600 since 10 min ago: refused 600"),
        ("INFO", "up again after 12 min (720 failures)"),
    ]


def test_flush_says_what_went_unsaid_and_nothing_more(caplog):
    clock = Clock()
    ep = episode(caplog, clock)
    ep.flush()
    for _ in range(5):
        ep.failed("bad")
    ep.flush()
    ep.flush()
    assert [r.getMessage() for r in caplog.records] == [
        "down: bad", "still down after 0 s, 5 failures, 4 since 0 s ago: bad"]


def test_span_words_durations_as_people_read_them():
    assert [span(s) for s in (45, 720, 12600)] == ["45 s", "12 min", "3.5 h"]


def test_a_flapping_device_is_one_episode_not_two_lines_per_flap(caplog):
    clock = Clock()
    ep = episode(caplog, clock)
    for i in range(90):  # 15 min: down 5 s, up 5 s
        ep.failed(f"refused {i}")
        clock.t += 5
        ep.ok()
        clock.t += 5
    for _ in range(61):  # then it stays up for 10 min
        ep.ok()
        clock.t += 10
    ep.failed("refused again")
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("WARNING", "down: refused 0"),
        ("INFO", "up again after 5 s (1 failures)"),
        ("WARNING", "still down after 10 min, 61 failures, 60 since 10 min ago: refused 60"),
        ("INFO", "up again after 15 min (90 failures)"),
        ("WARNING", "down: refused again"),
    ]


def test_a_recovery_that_lasts_closes_the_episode_quietly(caplog):
    clock = Clock()
    ep = episode(caplog, clock)
    ep.failed("refused")
    clock.t += 30
    ep.ok()
    clock.t += 600
    ep.ok()
    ep.failed("refused later")
    assert [r.getMessage() for r in caplog.records] == [
        "down: refused", "up again after 30 s (1 failures)", "down: refused later"]
