"""Tests of relaymesh/bus.py: envelopes, atomic writes, claims by rename, and
the moves that finish a message.

These tests use the bus alone on a fresh root, with no store. The bus is a
set of folders and renames, and its guarantees hold without a database: a
claimer never reads half a file, two claimers never get the same file, and
finishing does not fail when the file is already gone. How the runtime combines
the bus with the store after a crash is tested in tests/test_regressions.py
and tests/test_runtime.py.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from relaymesh.bus import (
    ENVELOPE_FIELDS,
    Envelope,
    FileBus,
    msg_id_from_file_name,
    utc_date,
    write_atomically,
)
from relaymesh.errors import ValidationError
from relaymesh.paths import RootLayout

NOW_MS = 1_700_000_000_000


def envelope(
    index: int = 1, priority: str = "normal", created: int = NOW_MS
) -> Envelope:
    return Envelope(
        msg_id=f"msg_{index:04d}",
        task_id=f"tsk_{index:04d}",
        step_id=f"stp_{index:04d}",
        to_agent="echo",
        priority=priority,
        created_at_ms=created,
        payload_path=f"/data/payload/stp_{index:04d}.payload",
        attempt=1,
    )


@pytest.fixture
def layout(tmp_path) -> RootLayout:
    layout = RootLayout(tmp_path / "root")
    layout.ensure()
    return layout


@pytest.fixture
def bus(layout) -> FileBus:
    return FileBus(layout)


def names(folder) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


# Envelopes ----------------------------------------------------------------------


def test_envelope_round_trips_through_json():
    original = envelope(7, "high")
    text = original.to_json()
    document = json.loads(text)
    assert tuple(document) == ENVELOPE_FIELDS
    assert document["priority"] == "HIGH"
    assert Envelope.from_json(text, "x") == original


def test_file_name_sorts_oldest_first():
    early = envelope(2, created=999)
    late = envelope(1, created=NOW_MS)
    assert early.file_name == f"0000000000999_{early.msg_id}.meta.json"
    assert sorted([late.file_name, early.file_name]) == [
        early.file_name,
        late.file_name,
    ]
    assert msg_id_from_file_name(early.file_name) == "msg_0002"


@pytest.mark.parametrize("name", ["notes.txt", "nounderscore.meta.json", ""])
def test_msg_id_from_a_foreign_name_is_none(name):
    assert msg_id_from_file_name(name) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{oops", "is not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"msgId": "m"}', "is missing taskId, stepId"),
    ],
)
def test_malformed_envelope_errors_name_the_source(text, expected):
    with pytest.raises(ValidationError) as caught:
        Envelope.from_json(text, "inbox/normal/bad.meta.json")
    assert "envelope inbox/normal/bad.meta.json" in str(caught.value)
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("priority", "URGENT", "priority 'URGENT'; allowed: HIGH, NORMAL, LOW"),
        ("attempt", "1", "field attempt must be an integer"),
        ("attempt", True, "field attempt must be an integer"),
        ("createdAtMs", 1.5, "field createdAtMs must be an integer"),
    ],
)
def test_envelope_field_errors(field, value, expected):
    document = json.loads(envelope().to_json())
    document[field] = value
    with pytest.raises(ValidationError, match=expected):
        Envelope.from_json(json.dumps(document), "f")


def test_utc_date_is_utc():
    assert utc_date(NOW_MS) == "2023-11-14"
    assert utc_date(0) == "1970-01-01"


# Writes -------------------------------------------------------------------------


def test_write_atomically_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "file.json"
    write_atomically(path, b"first")
    write_atomically(path, b"second", durable=True)
    assert path.read_bytes() == b"second"
    assert names(tmp_path) == ["file.json"]


def test_enqueue_writes_meta_and_inbox_copies(bus, layout):
    message = envelope(3, "low")
    bus.enqueue(message)
    meta = layout.meta / "msg_0003.meta.json"
    entry = layout.inbox_tier("low") / message.file_name
    assert meta.read_text() == entry.read_text() == message.to_json()
    assert names(layout.inbox_tier("normal")) == []


def test_list_tier_is_oldest_first_and_skips_foreign_and_hidden_files(bus, layout):
    for index, created in ((1, 300), (2, 100), (3, 200)):
        bus.enqueue(envelope(index, created=created))
    tier = layout.inbox_tier("normal")
    (tier / ".0000000000001_msg_tmp.meta.json.123.tmp").write_text("partial")
    (tier / ".hidden.meta.json").write_text("{}")
    (tier / "README.txt").write_text("not a message")
    assert [msg_id_from_file_name(name) for name in bus.list_tier("normal")] == [
        "msg_0002",
        "msg_0003",
        "msg_0001",
    ]


def test_list_of_a_missing_tier_is_empty(bus, layout):
    layout.inbox_tier("high").rmdir()
    assert bus.list_tier("high") == []


# Claims -------------------------------------------------------------------------


def test_claim_moves_the_entry_into_the_owners_folder(bus, layout):
    message = envelope(1, "high")
    bus.enqueue(message)
    claimed = bus.claim("high", message.file_name, "node-a")
    assert claimed is not None
    assert claimed.envelope == message
    assert claimed.path == layout.processing_for("node-a") / message.file_name
    assert claimed.owner == "node-a"
    assert claimed.priority == "high"
    assert names(layout.inbox_tier("high")) == []
    # mtime is refreshed: the sweeper measures time spent in processing/.
    assert claimed.path.stat().st_mtime >= time.time() - 60


def test_claim_of_a_taken_entry_returns_none(bus):
    message = envelope()
    bus.enqueue(message)
    assert bus.claim("normal", message.file_name, "node-a") is not None
    assert bus.claim("normal", message.file_name, "node-b") is None


def test_claim_of_a_malformed_entry_returns_it_without_envelope(bus, layout):
    name = "0000000000001_msg_bad.meta.json"
    (layout.inbox_tier("normal") / name).write_text("{}")
    claimed = bus.claim("normal", name, "node-a")
    assert claimed is not None
    assert claimed.envelope is None
    assert "is missing msgId" in claimed.error
    assert claimed.path.exists()


def test_concurrent_claimers_never_get_the_same_file(bus, layout):
    for index in range(300):
        bus.enqueue(envelope(index))
    listing = bus.list_tier("normal")
    won: dict[str, list[str]] = {"node-a": [], "node-b": []}
    start = threading.Barrier(2)

    def claimer(owner: str) -> None:
        start.wait(5)
        for name in listing:
            if bus.claim("normal", name, owner) is not None:
                won[owner].append(name)

    threads = [threading.Thread(target=claimer, args=(owner,)) for owner in won]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert set(won["node-a"]).isdisjoint(won["node-b"])
    assert sorted(won["node-a"] + won["node-b"]) == listing
    assert bus.list_tier("normal") == []


# Finishing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("destination", "folder"),
    [("done", "done/2023-11-14"), ("retry", "retry"), ("dead", "dead")],
)
def test_finish_moves_to_the_destination(bus, layout, destination, folder):
    message = envelope()
    bus.enqueue(message)
    claimed = bus.claim("normal", message.file_name, "node-a")
    bus.finish(claimed.path, destination, NOW_MS)
    assert names(layout.root / folder) == [message.file_name]
    assert names(layout.processing_for("node-a")) == []


def test_finish_of_a_missing_file_is_not_an_error(bus, layout):
    bus.finish(layout.processing_for("node-a") / "gone.meta.json", "dead", NOW_MS)
    assert names(layout.dead) == []


def test_finish_to_an_unknown_destination_raises(bus, layout):
    with pytest.raises(ValueError, match="unknown bus destination 'trash'"):
        bus.finish(layout.processing / "x.meta.json", "trash", NOW_MS)


def test_discard_and_return_to_inbox(bus, layout):
    first, second = envelope(1), envelope(2, "low")
    bus.enqueue(first)
    bus.enqueue(second)
    one = bus.claim("normal", first.file_name, "node-a")
    two = bus.claim("low", second.file_name, "node-a")
    bus.discard(one.path)
    bus.discard(one.path)  # twice is fine
    bus.return_to_inbox(two.path, "low")
    bus.return_to_inbox(two.path, "low")
    assert names(layout.processing_for("node-a")) == []
    assert bus.list_tier("low") == [second.file_name]
    assert bus.list_tier("normal") == []


# Inspection ---------------------------------------------------------------------


def test_is_queued_or_claimed_looks_in_the_tier_and_every_owner(bus):
    message = envelope()
    assert not bus.is_queued_or_claimed(message)
    bus.enqueue(message)
    assert bus.is_queued_or_claimed(message)
    claimed = bus.claim("normal", message.file_name, "node-z")
    assert bus.is_queued_or_claimed(message)
    bus.finish(claimed.path, "done", NOW_MS)
    assert not bus.is_queued_or_claimed(message)


def test_depths_and_processing_entries(bus, layout):
    for index, priority in enumerate(["high", "high", "normal", "low", "low", "low"]):
        bus.enqueue(envelope(index, priority))
    claimed = bus.claim("low", bus.list_tier("low")[0], "node-a")
    bus.claim("high", bus.list_tier("high")[0], "node-b")
    bus.finish(claimed.path, "dead", NOW_MS)
    bus.claim("low", bus.list_tier("low")[0], "node-a")
    (layout.processing / "stray-file.txt").write_text("not an owner folder")

    assert bus.depths() == {
        "high": 1,
        "normal": 1,
        "low": 1,
        "processing": 2,
        "dead": 1,
        "retry": 0,
    }
    owners = sorted(owner for owner, _, _ in bus.processing_entries())
    assert owners == ["node-a", "node-b"]
