import json
import sqlite3

from edge.report.outbox import Outbox


def test_ids_are_monotonic_and_continue_after_reopen_even_when_all_rows_were_removed(tmp_path):
    path = tmp_path / "outbox.sqlite"
    with Outbox(path) as box:
        first = [box.enqueue("t", {"n": i}) for i in range(5)]
        assert first == [1, 2, 3, 4, 5]
        for msg_id in first:
            box.remove(msg_id)
        assert len(box) == 0
        assert box.last_id == 5

    with Outbox(path) as box:
        assert len(box) == 0
        assert box.last_id == 5
        assert box.enqueue("t", {"n": 5}) == 6
        assert box.enqueue("t", {"n": 6}) == 7


def test_enqueue_puts_msg_id_in_payload_and_is_on_disk_before_it_returns(tmp_path):
    path = tmp_path / "outbox.sqlite"
    with Outbox(path) as box:
        payload = {"p_kw": 12.5}
        msg_id = box.enqueue("pedf/v1/s1/telemetry", payload)
        assert payload == {"p_kw": 12.5}  # the caller's dict is left alone

        other = sqlite3.connect(path)  # an independent reader sees the committed row
        try:
            topic, body, qos = other.execute(
                "SELECT topic, payload, qos FROM outbox WHERE msg_id = ?", (msg_id,)
            ).fetchone()
        finally:
            other.close()
        assert topic == "pedf/v1/s1/telemetry"
        assert qos == 1
        assert json.loads(body) == {"p_kw": 12.5, "msg_id": msg_id}
        assert box.pending(1)[0].data() == {"p_kw": 12.5, "msg_id": msg_id}


def test_pending_is_oldest_first_with_limit_and_after(tmp_path):
    with Outbox(tmp_path / "o.sqlite") as box:
        ids = [box.enqueue(f"t/{i}", {"i": i}) for i in range(6)]
        box.remove(ids[1])
        assert [r.msg_id for r in box.pending(10)] == [1, 3, 4, 5, 6]
        assert [r.msg_id for r in box.pending(2)] == [1, 3]
        assert [r.msg_id for r in box.pending(2, after=3)] == [4, 5]
        assert [r.topic for r in box.pending(10, after=5)] == ["t/5"]
        box.remove(ids[1])  # removing twice is harmless
        assert len(box) == 5


def test_outbox_uses_wal_and_full_sync(tmp_path):
    with Outbox(tmp_path / "o.sqlite") as box:
        assert box._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_listeners_hear_each_committed_enqueue(tmp_path):
    heard = []
    with Outbox(tmp_path / "o.sqlite") as box:
        box.add_listener(heard.append)
        box.enqueue("t", {})
        box.enqueue("t", {})
        box.remove_listener(heard.append)
        box.enqueue("t", {})
    assert heard == [1, 2]


def test_acknowledged_batch_leaves_in_one_transaction_and_others_stay(tmp_path):
    box = Outbox(tmp_path / "outbox.sqlite")
    ids = [box.enqueue("t", {"n": n}) for n in range(5)]
    box.remove_many(ids[:3])
    assert [r.msg_id for r in box.pending(10)] == ids[3:]
    box.remove_many([])  # nothing acknowledged: nothing happens
    assert len(box) == 2
    box.close()
    reader = sqlite3.connect(tmp_path / "outbox.sqlite")
    assert [r[0] for r in reader.execute("SELECT msg_id FROM outbox ORDER BY msg_id")] == ids[3:]
