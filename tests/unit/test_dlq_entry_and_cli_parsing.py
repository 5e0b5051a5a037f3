"""The dead-letter entry format, capture from raw messages, and CLI parsing."""

import json
from types import SimpleNamespace

import click
import pytest

from worker_app.cli.dlq import parse_duration
from worker_app.dlq.capture import describe_exception, from_message, from_request
from worker_app.dlq.entry import DeadLetter, EntryFormatError
from worker_app.headers import FIRST_PUBLISHED_AT, PUBLISHED_AT, REPLAY_COUNT
from worker_app.ratelimit import Rate


def _entry(**overrides: object) -> DeadLetter:
    values: dict[str, object] = {
        "id": "t-1", "reason": "retries_exhausted", "task_name": "billing.charge",
        "task_id": "t-1", "queue": "default", "args": [1], "kwargs": {"a": "b"},
    }  # fmt: skip
    values.update(overrides)
    return DeadLetter(**values)  # type: ignore[arg-type]


def test_entry_round_trips_through_json() -> None:
    entry = _entry(exception_type="TimeoutError", retries=5, failed_at=12.5, replay_count=2)
    again = DeadLetter.from_json(entry.to_json())
    assert again == entry
    # Stable bytes: the store compares them to detect concurrent changes.
    assert again.to_json() == entry.to_json()


def test_entry_rejects_garbage_and_unknown_reasons() -> None:
    with pytest.raises(EntryFormatError):
        DeadLetter.from_json(b"{nope")
    with pytest.raises(EntryFormatError):
        DeadLetter.from_json(b"[1, 2]")
    with pytest.raises(ValueError, match="reason"):
        _entry(reason="bored")


def test_only_entries_with_a_task_are_replayable() -> None:
    assert _entry().replayable
    assert not _entry(reason="undecodable", raw_body="{x").replayable
    assert not _entry(reason="invalid_message", task_name=None).replayable


def test_from_request_keeps_the_first_publish_time_and_replay_count() -> None:
    try:
        raise TimeoutError("slow upstream")
    except TimeoutError as exc:
        entry = from_request(
            reason="retries_exhausted", task_name="t", task_id="id-1", args=(1,), kwargs={},
            headers={FIRST_PUBLISHED_AT: 100.0, PUBLISHED_AT: 200.0, REPLAY_COUNT: 2},
            delivery_info={"routing_key": "high", "priority": 3}, retries=4, exc=exc,
        )  # fmt: skip
    assert entry.first_published_at == 100.0
    assert entry.replay_count == 2
    assert entry.queue == "high"
    assert entry.priority == 3
    assert entry.exception_type == "TimeoutError"
    assert "slow upstream" in (entry.traceback or "")


def test_from_message_keeps_raw_bytes_of_an_undecodable_body() -> None:
    message = SimpleNamespace(
        headers={"task": "t", "id": "id-2"},
        delivery_info={"routing_key": "low"},
        properties={},
        body=b"\xff\xfe not json",
        content_type="application/json",
    )
    entry = from_message(message, reason="undecodable", exc=ValueError("bad"))
    assert entry.id == "id-2"
    assert entry.raw_body is not None and "not json" in entry.raw_body
    assert entry.queue == "low"
    assert not entry.replayable
    json.loads(entry.to_json())  # always storable


def test_from_message_without_an_id_gets_a_stable_digest_id() -> None:
    message = SimpleNamespace(
        headers={}, delivery_info={}, properties={}, body=b"x", content_type=None
    )
    first = from_message(message, reason="invalid_message", exc=None)
    second = from_message(message, reason="invalid_message", exc=None)
    assert first.id == second.id
    assert first.id.startswith("raw-")


def test_describe_exception_names_the_module() -> None:
    assert describe_exception(KeyError("k"))[0] == "KeyError"
    assert describe_exception(click.BadParameter("x"))[0] == "click.exceptions.BadParameter"
    assert describe_exception(None) == (None, None, None)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("12h", 43200), ("7d", 604800), ("2w", 1209600)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "7 days", "-1d", "1y"])
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_duration(text)


def test_rate_parse() -> None:
    assert Rate.parse("10/s") == Rate(10, 1.0)
    assert Rate.parse(" 100 / m ") == Rate(100, 60.0)
    for bad in ("0/s", "ten/s", "10/d", "10"):
        with pytest.raises(ValueError, match="rate"):
            Rate.parse(bad)


def test_recorded_headers_keep_celerys_and_worker_apps_json_safe_and_cut() -> None:
    from worker_app.dlq.capture import HEADER_VALUE_LIMIT, recorded_headers  # noqa: PLC0415

    source = {"task": "t.a", "id": "x", "worker_app_queue": "low", "args": [1], "hostname": "h",
              "custom": 1, "argsrepr": "a" * 5000, "stamps": {object(): 1}}  # fmt: skip
    kept = recorded_headers(source)
    assert set(kept) == {"task", "id", "worker_app_queue", "argsrepr", "stamps"}
    assert kept["argsrepr"].endswith(" [cut]")
    assert len(kept["argsrepr"]) == HEADER_VALUE_LIMIT + len(" [cut]")
    assert isinstance(kept["stamps"], str)  # not JSON: its repr
    assert recorded_headers(source, all_keys=True)["custom"] == 1
