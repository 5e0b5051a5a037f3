"""Beat on two hosts (issue 20): the celery_beat preflight lets several Beat hosts run only with
a scheduler that locks, under every name ``celery beat -S`` accepts for RedBeat; the file
scheduler (the default) on two hosts stops the play and says what to set. Real
ansible-playbook runs in check mode (nothing changed); the failover itself is proven by
tests/integration/test_beat_failover.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.roles.test_app_module import DJANGO, playbook, preflights
from tests.support.ansible_output import failure_message, recap

REDBEAT_NAMES = [
    "redbeat.RedBeatScheduler",
    "redbeat.schedulers.RedBeatScheduler",
    "redbeat.schedulers:RedBeatScheduler",
]


@pytest.mark.parametrize("scheduler", REDBEAT_NAMES)
def test_two_beat_hosts_on_redbeat_pass(tmp_path: Path, scheduler: str) -> None:
    variables = {**DJANGO, "celery_beat_scheduler": scheduler}
    rc, output = playbook(tmp_path, preflights("celery_beat"), variables, hosts=2)
    assert rc == 0, output


@pytest.mark.bad_input
def test_two_beat_hosts_on_the_file_scheduler_stop_the_play(tmp_path: Path) -> None:
    variables = {**DJANGO, "celery_beat_scheduler": ""}
    rc, output = playbook(tmp_path, preflights("celery_beat"), variables, hosts=2)
    assert rc != 0, output
    message = failure_message(output)
    assert "The beat group has 2 hosts (host-1, host-2)" in message, output
    assert "redbeat.RedBeatScheduler" in message, output
    assert all(host["changed"] == 0 for host in recap(output).values()), output
