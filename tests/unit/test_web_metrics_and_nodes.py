"""Parts of the console that need no Redis: the request metrics' bounded labels, and how a
worker node is matched to its pool."""

from __future__ import annotations

import redis
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.security import generate_password_hash

from worker_app.dlq.store import DeadLetterStore
from worker_app.pools import load_catalogue
from worker_app.web.app import create_console
from worker_app.web.users import User
from worker_app.worker_nodes import Node, pool_of_node, pool_size

PASSWORD = "unit-long-password"  # noqa: S105 - test credentials
USERS = {"viewer": User("viewer", generate_password_hash(PASSWORD, "pbkdf2:sha256:1000"),
                        "read-only")}  # fmt: skip


def test_odd_methods_and_unknown_paths_are_counted_without_new_labels() -> None:
    # The store's client never connects: these requests touch no Redis.
    store = DeadLetterStore(redis.Redis(host="127.0.0.1", port=1))
    client = create_console(store, USERS, "k" * 40, Celery("unit")).test_client()
    for n in range(3):
        assert client.open(f"/api/queues?{n}", method="BREW").status_code == 405
        assert client.get(f"/no/such/page/{n}").status_code == 404
    text = client.get("/metrics", auth=("viewer", PASSWORD)).get_data(as_text=True)
    counted = {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "worker_app_console_requests_total"
    }
    assert counted == {
        (("endpoint", "none"), ("method", "other"), ("status", "405")): 3.0,
        (("endpoint", "none"), ("method", "GET"), ("status", "404")): 3.0,
    }


def test_a_node_belongs_to_the_pool_of_its_queues_else_of_its_name() -> None:
    catalogue = load_catalogue()  # critical, high, default, low
    by_queue = Node("anything@host", ("low",), 2, None)
    by_name = Node("high@host", ("elsewhere",), 1, None)
    stranger = Node("mystery@host", ("elsewhere",), 1, None)
    assert [pool_of_node(catalogue, n) for n in (by_queue, by_name)] == [
        catalogue.pool("low"),
        catalogue.pool("high"),
    ]
    assert pool_of_node(catalogue, stranger) is None


def test_pool_size_reads_the_processes_else_the_maximum() -> None:
    assert pool_size({"pool": {"processes": [11, 12, 13], "max-concurrency": 8}}) == 3
    assert pool_size({"pool": {"max-concurrency": 8}}) == 8
    assert pool_size(None) == 0
