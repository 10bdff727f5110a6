"""The daemon's durable SQLite stores refuse a corrupt file with a message naming the store,
the file and what to do (edge/sqlitefile.open_durable), instead of a bare sqlite3 error."""

import pytest

from edge.report.outbox import Outbox
from edge.vpp.cmdstore import CommandStore
from edge.vpp.eventstore import EventStore


@pytest.mark.parametrize(("open_store", "named"), [
    (Outbox, "outbox"),
    (EventStore, "the DR event store"),
    (lambda p: CommandStore(p, 100), "the park command store"),
])
def test_a_corrupt_store_file_is_named_with_the_fix(tmp_path, open_store, named):
    path = tmp_path / "state" / "store.sqlite"
    path.parent.mkdir()
    path.write_bytes(b"this is not a database, it is a text file " * 200)
    with pytest.raises(RuntimeError) as err:
        open_store(path)
    msg = str(err.value)
    assert msg.startswith(f"cannot open {named} {path}:") and "move" in msg


def test_a_store_is_created_with_its_directory(tmp_path):
    store = CommandStore(tmp_path / "new" / "dir" / "commands.sqlite", 100)
    try:
        assert store.load().active == []
    finally:
        store.close()
