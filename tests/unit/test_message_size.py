"""The message size guard's pure logic: measuring a body, the error, the setting, replay checks."""

from __future__ import annotations

import json
import zlib
from types import SimpleNamespace

import pytest

from worker_app.dlq.entry import DeadLetter
from worker_app.dlq.replay import oversized
from worker_app.factory import create_app
from worker_app.message_size import (
    SETTING,
    MessageTooLargeError,
    body_size,
    check,
    task_body,
)
from worker_app.settings import Settings, SettingsError

pytestmark = pytest.mark.bad_input


def test_body_size_is_the_serialized_json_in_bytes() -> None:
    body = (["é" * 10], {"n": 1}, {"callbacks": None})
    expected = len(json.dumps(body).encode())  # kombu's json keeps the \u escapes
    assert body_size(body, "json") == expected


def test_compression_is_measured_after_compressing() -> None:
    body = (["a" * 100_000], {}, {})
    plain = body_size(body, "json")
    compressed = body_size(body, "json", "zlib")
    assert plain > 100_000
    assert compressed == len(zlib.compress(json.dumps(body).encode()))
    assert compressed < plain // 100


def test_task_body_is_the_body_celery_builds_for_a_plain_call() -> None:
    app = create_app(Settings(broker_url="memory://"))
    message = app.amqp.as_task_v2("an-id", "billing.charge", args=("o-1", 1999), kwargs={"x": 1})
    _headers, _properties, body, _event = message
    ours = task_body(("o-1", 1999), {"x": 1})
    assert body_size(body, "json") == body_size(ours, "json")
    assert json.loads(json.dumps(body)) == json.loads(json.dumps(ours))


def test_check_names_the_task_the_size_the_limit_and_the_setting() -> None:
    check("billing.charge", 1024, 1024)  # at the limit: fine
    with pytest.raises(MessageTooLargeError) as excinfo:
        check("billing.charge", 1025, 1024)
    text = str(excinfo.value)
    assert "billing.charge" in text
    assert "1025 bytes" in text
    assert "limit of 1024 bytes" in text
    assert SETTING in text
    assert (excinfo.value.task_name, excinfo.value.size, excinfo.value.limit) == (
        "billing.charge",
        1025,
        1024,
    )


def test_the_setting_has_a_default_and_refuses_nonsense() -> None:
    assert Settings.from_env({}).max_message_bytes == 1024 * 1024
    assert Settings.from_env({SETTING: "4096"}).max_message_bytes == 4096
    for raw, message in (("big", "must be an integer"), ("100", "must be >= 1024")):
        with pytest.raises(SettingsError, match=message) as excinfo:
            Settings.from_env({SETTING: raw})
        assert SETTING in str(excinfo.value)


def _entry(entry_id: str, payload: str) -> DeadLetter:
    return DeadLetter(id=entry_id, reason="non_retryable", task_name="t.big", task_id=entry_id,
                      queue="low", args=[payload])  # fmt: skip


def test_replay_finds_every_entry_over_the_limit_before_publishing() -> None:
    app = SimpleNamespace(
        worker_app_settings=Settings(max_message_bytes=2048),
        conf=SimpleNamespace(task_serializer="json", task_compression=None),
    )
    entries = [_entry("small", "x"), _entry("big-1", "x" * 3000), _entry("big-2", "y" * 5000)]
    limit, over = oversized(app, entries)
    assert limit == 2048
    assert [entry_id for entry_id, _ in over] == ["big-1", "big-2"]
    assert all(size > 2048 for _, size in over)
    assert over[0][1] == body_size(task_body(["x" * 3000], {}), "json")
