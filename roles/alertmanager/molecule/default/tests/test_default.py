"""Verifiers for the alertmanager role: delivery by e-mail and webhook, the bundle's route and
inhibitions, a reload that keeps the process, and a bad configuration that changes nothing."""

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import testinfra.utils.ansible_runner
import yaml

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("all")

SCENARIO = Path(__file__).resolve().parents[1]
ROUTING = yaml.safe_load((SCENARIO.parents[3] / "alertmanager" / "routing.yml").read_text())
API = "http://127.0.0.1:9093"
SECRET = "molecule-smtp-secret-0001"  # noqa: S105 - test-only secret
CONFIG = "/etc/prometheus/alertmanager.yml"
RECEIVERS = [
    {"name": "critical", "email_to": ["oncall@molecule.test"],
     "webhook_urls": ["http://127.0.0.1:9095/critical"]},
    {"name": "warning", "webhook_urls": ["http://127.0.0.1:9095/warning"]},
]  # fmt: skip


def wait_for(check, seconds=90):
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(1)


def get(host, path):
    return json.loads(host.check_output(f"curl -fsS '{API}{path}'"))


def post_alerts(host, alerts):
    body = json.dumps(alerts).replace("'", "'\\''")
    host.check_output(
        f"curl -fsS -X POST -H 'Content-Type: application/json' -d '{body}' {API}/api/v2/alerts"
    )


def jsonl(host, path):
    text = host.run(f"cat {path}").stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def loaded_config(host):
    return yaml.safe_load(get(host, "/api/v2/status")["config"]["original"])


def contains(actual, expected):
    """``actual`` holds everything of ``expected`` (Alertmanager adds its defaults)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and contains(actual[k], v) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(contains(a, e) for a, e in zip(actual, expected, strict=True))
        )
    return actual == expected


def test_listens_only_on_the_configured_address_as_prometheus(host):
    assert wait_for(lambda: host.run(f"curl -fsS {API}/-/ready").rc == 0)
    listening = host.check_output("ss -Htln | awk '{print $4}'").split()
    assert [a for a in listening if a.endswith(":9093")] == ["127.0.0.1:9093"]
    assert not [a for a in listening if a.endswith(":9094")], "cluster gossip must be off"
    pids = host.check_output("pgrep -f '^/usr/bin/prometheus-alertmanager'").split()
    assert len(pids) == 1
    assert host.check_output(f"ps -o user:20= -p {pids[0]}").strip() == "prometheus"


def test_runs_the_bundles_route_tree_and_inhibitions(host):
    config = loaded_config(host)
    assert contains(config["route"], ROUTING["route"]), config["route"]
    assert contains(config["inhibit_rules"], ROUTING["inhibit_rules"]), config["inhibit_rules"]
    assert [r["name"] for r in config["receivers"]] == ["critical", "warning"]


def test_the_smtp_password_stays_in_its_own_file(host):
    password_file = host.file("/etc/prometheus/alertmanager-smtp-password")
    assert (password_file.user, password_file.group, password_file.mode) == (
        "root", "prometheus", 0o640)  # fmt: skip
    assert password_file.content_string == SECRET
    config = host.file(CONFIG)
    assert (config.user, config.group, config.mode) == ("root", "prometheus", 0o640)
    assert SECRET not in config.content_string
    assert SECRET not in host.check_output("ps -eo args")


def test_a_critical_alert_reaches_the_webhook_and_the_mailbox(host):
    name = f"MoleculeCheck{uuid.uuid4().hex[:8]}"
    post_alerts(host, [{
        "labels": {"alertname": name, "severity": "critical", "pool": "low"},
        "annotations": {"summary": "molecule says hello"},
    }])  # fmt: skip

    def webhook():
        return [a for a in jsonl(host, "/var/lib/alert-sinks/webhook.jsonl")
                if a["alertname"] == name]  # fmt: skip

    delivered = wait_for(webhook)
    assert delivered, jsonl(host, "/var/lib/alert-sinks/webhook.jsonl")
    assert delivered[0]["receiver"] == "critical"
    assert delivered[0]["status"] == "firing"
    assert delivered[0]["labels"]["pool"] == "low"
    assert delivered[0]["annotations"] == {"summary": "molecule says hello"}

    def mails():
        return [m for m in jsonl(host, "/var/lib/alert-sinks/mail.jsonl") if name in m["subject"]]

    mail = wait_for(mails)
    assert mail, jsonl(host, "/var/lib/alert-sinks/mail.jsonl")
    # Alertmanager logged in with the password from the file and sent to the critical address.
    assert mail[0]["login"] == ["PLAIN", "alertmanager", SECRET]
    assert mail[0]["to"] == ["oncall@molecule.test"]
    assert mail[0]["from"] == "alertmanager@molecule.test"


def test_redis_down_and_pool_down_inhibit_the_backlog_alerts_they_cause(host):
    run = uuid.uuid4().hex[:8]
    post_alerts(host, [
        {"labels": {"alertname": "RedisDown", "severity": "critical", "env": run}},
        {"labels": {"alertname": "CeleryBacklogGrowing", "severity": "warning", "env": run,
                    "queue_name": "low"}},
        {"labels": {"alertname": "CeleryWorkerPoolDown", "severity": "critical",
                    "env": f"{run}-pool", "pool": "high", "queue_name": "high"}},
        {"labels": {"alertname": "CeleryQueueWaitSLOBreach", "severity": "warning",
                    "env": f"{run}-pool", "queue_name": "high"}},
        {"labels": {"alertname": "CeleryQueueWaitSLOBreach", "severity": "warning",
                    "env": f"{run}-pool", "queue_name": "default"}},
    ])  # fmt: skip

    def states():
        alerts = get(host, "/api/v2/alerts?filter=" + quote(f'env=~"{run}.*"'))
        found = {(a["labels"]["alertname"], a["labels"].get("queue_name", "")): a["status"]["state"]
                 for a in alerts}  # fmt: skip
        return found if len(found) == 5 else None

    assert wait_for(states) == {
        ("RedisDown", ""): "active",
        ("CeleryBacklogGrowing", "low"): "suppressed",
        ("CeleryWorkerPoolDown", "high"): "active",
        ("CeleryQueueWaitSLOBreach", "high"): "suppressed",
        ("CeleryQueueWaitSLOBreach", "default"): "active",  # its pool is up
    }


def apply(host, variables):
    extra = Path(f"/tmp/alertmanager-vars-{uuid.uuid4().hex}.json")
    extra.write_text(json.dumps(variables))
    try:
        play = subprocess.run(
            ["ansible-playbook", "-i", str(Path(INVENTORY).parent),
             "--limit", host.backend.get_hostname(), str(SCENARIO / "apply.yml"),
             "-e", f"@{extra}"],
            capture_output=True, text=True, timeout=600, check=False,
            env={**os.environ, "ANSIBLE_ROLES_PATH": str(SCENARIO.parents[2])},
        )  # fmt: skip
    finally:
        extra.unlink()
    return play.returncode, play.stdout + play.stderr


def test_a_changed_receiver_is_loaded_by_reload_not_restart(host):
    pid = host.check_output("pgrep -f '^/usr/bin/prometheus-alertmanager'")
    changed = [
        *RECEIVERS[:1],
        {
            **RECEIVERS[1],
            "webhook_urls": ["http://127.0.0.1:9095/warning", "http://127.0.0.1:9095/warning-copy"],
        },
    ]
    rc, output = apply(host, {"alertmanager_receivers": changed})
    assert rc == 0, output
    # Newer Alertmanagers show webhook URLs as <secret> in the API: count them.
    assert len(loaded_config(host)["receivers"][1]["webhook_configs"]) == 2
    assert host.check_output("pgrep -f '^/usr/bin/prometheus-alertmanager'") == pid
    # Back to the converged receivers.
    rc, output = apply(host, {"alertmanager_receivers": RECEIVERS})
    assert rc == 0, output
    assert len(loaded_config(host)["receivers"][1]["webhook_configs"]) == 1


def test_a_bad_config_fails_the_play_and_the_running_config_stays(host):
    before = get(host, "/api/v2/status")["config"]["original"]
    live = host.file(CONFIG).sha256sum
    broken_route = {**ROUTING["route"], "receiver": "nobody"}

    rc, output = apply(host, {"alertmanager_route": broken_route})
    assert rc == 2, output
    assert "Check the candidate configuration with amtool" in output
    # amtool's own message (the callback may wrap it over lines)
    assert 'undefined receiver "nobody" used in route' in " ".join(output.split()), output

    assert host.file(CONFIG).sha256sum == live
    assert get(host, "/api/v2/status")["config"]["original"] == before
    assert "Signal alertmanager to reload" not in output
