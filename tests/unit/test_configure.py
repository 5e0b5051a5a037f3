"""``worker_app.configure`` on a user's own Celery app: what it sets, what it leaves, what it
reports (the worker-side proof is in tests/integration/test_adoption.py)."""

from __future__ import annotations

import pytest
from celery import Celery

from worker_app import configure, settings_of
from worker_app.amqp import GuardedSender
from worker_app.configuration import PRIORITY_SEP


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "WORKER_APP_POOLS_FILE"):
        monkeypatch.delenv(name, raising=False)


def user_app(**conf: object) -> Celery:
    app = Celery("proj", set_as_current=False)
    app.conf.update(conf)
    return app


@pytest.mark.usefixtures("clean_env")
def test_configure_makes_a_stock_app_safe_for_redis() -> None:
    app = configure(user_app(broker_url="redis://10.0.0.9:6379/3"))
    conf = app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.accept_content == ["json"]
    assert conf.worker_consumer == "worker_app.dlq.consumer:DeadLetteringConsumer"
    assert conf.broker_transport_options["visibility_timeout"] == 3600
    assert conf.broker_transport_options["sep"] == PRIORITY_SEP == "\x06\x16"
    assert [q.name for q in conf.task_queues] == ["critical", "high", "default", "low"]
    assert conf.task_default_queue == "default"
    assert "trim-dead-letters" in conf.beat_schedule
    assert "worker_app.tasks" in conf.include
    assert isinstance(app.amqp, GuardedSender)
    # The broker the app names is the one worker_app's own clients use too.
    assert settings_of(app).broker_url == "redis://10.0.0.9:6379/3"
    assert app.worker_app_overridden == ()


@pytest.mark.usefixtures("clean_env")
def test_configure_reports_the_user_settings_it_must_override_and_keeps_the_rest() -> None:
    app = configure(
        user_app(
            task_acks_late=False,
            worker_prefetch_multiplier=4,
            task_serializer="msgpack",
            task_default_rate_limit="10/s",
            beat_schedule={"mine": {"task": "proj.tick", "schedule": 5.0}},
            broker_transport_options={"socket_keepalive": True},
        )
    )
    overridden = "\n".join(app.worker_app_overridden)
    assert "task_acks_late=False -> True (a message is acknowledged only after" in overridden
    assert "worker_prefetch_multiplier=4 -> 1" in overridden
    assert len(app.worker_app_overridden) == 2
    # Settings the guarantees do not need stay as the user set them.
    assert app.conf.task_serializer == "msgpack"
    assert app.conf.task_default_rate_limit == "10/s"
    assert set(app.conf.beat_schedule) == {"mine", "trim-dead-letters"}
    assert app.conf.broker_transport_options["socket_keepalive"] is True


@pytest.mark.usefixtures("clean_env")
def test_worker_app_keys_go_under_the_apps_global_keyprefix_once() -> None:
    app = user_app()
    app.conf.broker_transport_options = {"global_keyprefix": "tenant1:"}
    configure(app, key_prefix="proj")
    assert settings_of(app).key_prefix == "tenant1:proj"
    configure(app)  # again: not twice
    assert settings_of(app).key_prefix == "tenant1:worker_app"
    assert configure(user_app()).worker_app_settings.key_prefix == "worker_app"


@pytest.mark.usefixtures("clean_env")
def test_configure_takes_worker_app_settings_as_keywords() -> None:
    app = configure(user_app(), visibility_timeout=7200, key_prefix="proj")
    assert settings_of(app).visibility_timeout == 7200
    assert settings_of(app).key_prefix == "proj"
    assert app.conf.broker_transport_options["visibility_timeout"] == 7200
    with pytest.raises(TypeError, match="unknown settings visibility; known: broker_url"):
        configure(user_app(), visibility=1)


@pytest.mark.usefixtures("clean_env")
def test_configure_keeps_a_custom_amqp_class() -> None:
    from celery.app.amqp import AMQP  # noqa: PLC0415

    class ProjectAMQP(AMQP):  # type: ignore[misc]
        marker = True

    app = Celery("proj", amqp=ProjectAMQP, set_as_current=False)
    configure(app)
    assert isinstance(app.amqp, ProjectAMQP)
    assert isinstance(app.amqp, GuardedSender)


def test_the_log_handler_joins_the_host_apps_handlers() -> None:
    import logging  # noqa: PLC0415

    from worker_app import json_logging  # noqa: PLC0415

    class Sentry(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            pass

    root = logging.getLogger()
    saved = list(root.handlers), root.level
    host_handler = Sentry()
    root.addHandler(host_handler)
    try:
        json_logging.configure("INFO", "json")
        json_logging.configure("WARNING", "text")  # a second setup replaces only its own
        ours = [h for h in root.handlers if isinstance(h, json_logging.WorkerAppHandler)]
        assert host_handler in root.handlers
        assert len(ours) == 1
        assert not isinstance(ours[0].formatter, json_logging.JsonFormatter)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_the_transport_refuses_an_untested_kombu_naming_the_tested_releases() -> None:
    from worker_app.broker_transport import (  # noqa: PLC0415
        TESTED_KOMBU,
        UntestedKombuError,
        check_kombu,
    )

    check_kombu()  # the installed one (pinned in requirements/runtime.txt) is tested
    check_kombu(f"{TESTED_KOMBU[0]}.9")
    with pytest.raises(UntestedKombuError) as excinfo:
        check_kombu("5.8.0")
    message = str(excinfo.value)
    assert "tested on kombu 5.7.x (make upstream); this process has kombu 5.8.0" in message
    assert "pip install 'kombu>=5.7,<5.8'" in message
