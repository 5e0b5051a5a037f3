"""The Django project's host: the example project (examples/django_project, installed from its
wheel, celery_app_module `proj`, SQLite) runs on the pools. Its tasks are published by its own
management commands, run by pool workers of the project's app and land in its database; a
failing one is dead-lettered and replayed with the worker-app CLI; Beat publishes a periodic
task created in the database (django-celery-beat's DatabaseScheduler)."""

import json
import os
import re
import time
import uuid

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("django_project")

VENV = "/opt/worker-app/venv"


def django(as_service_user, command):
    """``django-admin COMMAND`` as the project runs on the host; its output."""
    out = as_service_user(f"{VENV}/bin/django-admin {command}")
    assert out.rc == 0, out.stdout + out.stderr
    return out.stdout


def shell(as_service_user, code):
    """The last line ``django-admin shell`` printed running ``code`` (Python, no double quotes)."""
    return django(as_service_user, f'shell --verbosity 0 -c "{code}"').strip().splitlines()[-1]


def new_order(as_service_user, sku, address="1 Molecule Street", age_days=0):
    """A pending order saved by the project's model; its id."""
    code = (
        "from datetime import timedelta; from django.utils import timezone; "
        "from orders.models import Order; "
        f"order = Order.objects.create(customer='molecule', sku='{sku}', "
        f"shipping_address='{address}', "
        f"created_at=timezone.now() - timedelta(days={age_days})); print(order.pk)"
    )
    return int(shell(as_service_user, code))


def order(as_service_user, pk):
    """The order as the project's API returns it."""
    code = (
        "import json; from orders.models import Order; "
        f"print(json.dumps(Order.objects.get(pk={pk}).as_dict()))"
    )
    return json.loads(shell(as_service_user, code))


def wait_for(as_service_user, pk, status, seconds=60):
    deadline = time.monotonic() + seconds
    current = order(as_service_user, pk)
    while current["status"] != status and time.monotonic() < deadline:
        time.sleep(1)
        current = order(as_service_user, pk)
    assert current["status"] == status, current
    return current


def test_a_task_published_by_a_management_command_runs_on_its_pool(as_service_user):
    sku = f"molecule-{uuid.uuid4().hex[:8]}"
    pk = new_order(as_service_user, sku)
    published = django(as_service_user, f"fulfil_pending --sku {sku}")
    assert f"order {pk}: task " in published, published
    done = wait_for(as_service_user, pk, "fulfilled")
    # orders.fulfil_order is an OrderTask (CriticalTask): the critical pool's worker ran it.
    assert done["fulfilled_by"].startswith("critical-0@"), done


def test_a_failing_task_is_dead_lettered_and_replayed_with_the_cli(host, as_service_user):
    sku = f"molecule-{uuid.uuid4().hex[:8]}"
    pk = new_order(as_service_user, sku, address="")
    published = django(as_service_user, f"fulfil_pending --sku {sku}")
    task_id = re.search(rf"order {pk}: task (\S+)", published).group(1)
    # No shipping address: UnshippableOrderError, no retry, a dead letter. `worker-app dlq`
    # works on the app the environment names (WORKER_APP_CELERY_APP=proj).
    entry = None
    listing = f"{VENV}/bin/worker-app dlq list --task orders.fulfil_order --json"
    for _ in range(60):
        listed = as_service_user(listing)
        assert listed.rc == 0, listed.stdout + listed.stderr
        entry = next((e for e in json.loads(listed.stdout) if e["task_id"] == task_id), None)
        if entry:
            break
        time.sleep(1)
    assert entry, f"no dead letter for task {task_id}"
    assert (entry["queue"], entry["args"]) == ("critical", [pk])
    assert entry["exception_type"].endswith("UnshippableOrderError"), entry
    assert order(as_service_user, pk)["status"] == "pending"
    # Fix the order, replay the entry: the same task runs again and ships it.
    shell(
        as_service_user,
        "from orders.models import Order; "
        f"print(Order.objects.filter(pk={pk}).update(shipping_address='2 Fixed Street'))",
    )
    replayed = as_service_user(f"{VENV}/bin/worker-app dlq replay {entry['id']}")
    assert replayed.rc == 0, replayed.stdout + replayed.stderr
    assert wait_for(as_service_user, pk, "fulfilled")["fulfilled_by"].startswith("critical-0@")


def test_beat_publishes_a_periodic_task_from_the_database(as_service_user):
    # Older than ORDERS_PENDING_TTL (a day): orders.expire_stale_orders expires it once Beat
    # finds the periodic task the project's command writes to the database.
    pk = new_order(as_service_user, f"molecule-{uuid.uuid4().hex[:8]}", age_days=2)
    assert "every 2 s" in django(as_service_user, "schedule_expiry --every 2")
    wait_for(as_service_user, pk, "expired", seconds=90)
