"""Frames between the daemon and its planner worker: a 4-byte length, then a pickle. Both
ends are this program (the worker is a child the daemon started), so pickle is safe here;
what crosses holds only types the control process has imported anyway (edge/plan/stats.py)."""

from __future__ import annotations

import pickle
import struct

_LEN = struct.Struct("!I")


def frame(msg: object) -> bytes:
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


def read_blocking(stream) -> object | None:
    """The next message from a binary file, None at the end of the stream."""
    head = stream.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    (n,) = _LEN.unpack(head)
    data = stream.read(n)
    return pickle.loads(data) if len(data) == n else None


async def read_async(reader) -> object | None:
    """The next message from an asyncio StreamReader, None at the end of the stream."""
    try:
        (n,) = _LEN.unpack(await reader.readexactly(_LEN.size))
        return pickle.loads(await reader.readexactly(n))
    except EOFError:  # asyncio.IncompleteReadError is one
        return None
