"""Keyed rate limits for the CSMS's logs: a charger that sends the same bad frame every
second, or a stranger that keeps knocking with an unknown id, costs one line per key per
`every_s`, with a count of what went unsaid, not one line per frame."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable


class Throttle:
    """Says each key at most once per `every_s`; remembers at most `keys` keys (the oldest
    is forgotten first), so keys an outsider chooses cannot grow memory without bound."""

    def __init__(self, log: logging.Logger, every_s: float = 600.0, keys: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log, self.every_s, self.keys, self.clock = log, every_s, keys, clock
        self._said: OrderedDict[object, list] = OrderedDict()  # key -> [said at, unsaid]

    def say(self, key: object, level: int, msg: str, *args: object,
            exc_info: object = None) -> bool:
        """Log `msg % args` unless `key` was said less than `every_s` ago; True if logged."""
        now = self.clock()
        entry = self._said.get(key)
        if entry is not None and now - entry[0] < self.every_s:
            entry[1] += 1
            return False
        unsaid = entry[1] if entry is not None else 0
        if unsaid:
            msg = f"{msg} (%d more like it since the last line)"
            args = (*args, unsaid)
        self.log.log(level, msg, *args, exc_info=exc_info)
        self._said[key] = [now, 0]
        self._said.move_to_end(key)
        while len(self._said) > self.keys:
            self._said.popitem(last=False)
        return True


class WireLog:
    """The logger handed to the `ocpp` library's ChargePoint: its per-frame INFO lines go to
    DEBUG, and its warnings and errors (a frame it cannot parse, a CallError, a reply nobody
    waits for) are throttled per message kind and charger. A traceback is kept on the first
    line of a kind: a handler that raises is our bug and worth one."""

    def __init__(self, log: logging.Logger, throttle: Throttle, who: str) -> None:
        self._log, self.throttle, self.who = log, throttle, who

    def log(self, level: int, msg: str, *args: object, **kw: object) -> None:
        """Also what a logging.LoggerAdapter around this object calls."""
        if level < logging.WARNING:
            self._log.debug(msg, *args)
        else:
            self.throttle.say((self.who, msg), logging.WARNING, f"{self.who}: {msg}", *args,
                              exc_info=kw.get("exc_info"))

    def debug(self, msg: str, *args: object, **kw: object) -> None:
        self.log(logging.DEBUG, msg, *args, **kw)

    def info(self, msg: str, *args: object, **kw: object) -> None:
        self.log(logging.INFO, msg, *args, **kw)

    def warning(self, msg: str, *args: object, **kw: object) -> None:
        self.log(logging.WARNING, msg, *args, **kw)

    def error(self, msg: str, *args: object, **kw: object) -> None:
        self.log(logging.ERROR, msg, *args, **kw)

    def exception(self, msg: str, *args: object, **kw: object) -> None:
        self.log(logging.ERROR, msg, *args, exc_info=True)

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging.Logger's name
        return self._log.isEnabledFor(min(level, logging.WARNING))
