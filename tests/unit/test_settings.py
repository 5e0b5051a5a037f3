"""Settings come from the environment and reject unusable values."""

import pytest

from worker_app.settings import Settings, SettingsError


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.result_backend is None
    assert settings.task_modules == ()


def test_reads_broker_and_task_modules() -> None:
    settings = Settings.from_env(
        {
            "CELERY_BROKER_URL": "redis://:s3cret@10.0.0.5:6380/2",
            "WORKER_APP_TASK_MODULES": " billing.tasks, ,mail.tasks ",
            "WORKER_APP_VISIBILITY_TIMEOUT": "7200",
        }
    )
    assert settings.broker_url == "redis://:s3cret@10.0.0.5:6380/2"
    assert settings.task_modules == ("billing.tasks", "mail.tasks")
    assert settings.visibility_timeout == 7200


@pytest.mark.parametrize(("raw", "message"), [("soon", "integer"), ("10", ">= 60")])
def test_rejects_bad_visibility_timeout(raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as excinfo:
        Settings.from_env({"WORKER_APP_VISIBILITY_TIMEOUT": raw})
    assert "WORKER_APP_VISIBILITY_TIMEOUT" in str(excinfo.value)
