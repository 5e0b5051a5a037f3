"""The exporter's view of worker nodes (celery_worker_up), on a clock the test moves."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from worker_app.metrics.exporter import EventMonitor


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def monitor(clock: Clock, timeout: float = 30, forget: float = 600) -> EventMonitor:
    return EventMonitor(None, CollectorRegistry(), timeout, forget, clock=clock)


def beat(events: EventMonitor, node: str, kind: str = "worker-heartbeat") -> None:
    events.on_worker({"type": kind, "hostname": node})


def test_a_node_is_up_while_it_beats_and_down_after_its_goodbye_or_its_silence() -> None:
    clock = Clock()
    events = monitor(clock)
    beat(events, "low@web-1", "worker-online")
    beat(events, "high@web-1")
    assert events.workers() == {"low@web-1": True, "high@web-1": True}
    clock.now += 20
    beat(events, "high@web-1")
    beat(events, "low@web-1", "worker-offline")
    assert events.workers() == {"low@web-1": False, "high@web-1": True}
    clock.now += 31
    assert events.workers() == {"low@web-1": False, "high@web-1": False}
    beat(events, "low@web-1", "worker-online")  # back
    assert events.workers()["low@web-1"] is True


def test_a_silent_node_is_forgotten_after_forget_after_and_never_with_zero() -> None:
    clock = Clock()
    events, keeper = monitor(clock, forget=600), monitor(clock, forget=0)
    for each in (events, keeper):
        beat(each, "low@web-1")
    clock.now += 601
    assert events.workers() == {}
    assert keeper.workers() == {"low@web-1": False}


def test_time_without_the_event_stream_is_not_silence() -> None:
    clock = Clock()
    events = monitor(clock)
    beat(events, "low@web-1")
    clock.now += 10
    events.lost_stream()
    clock.now += 300  # Redis unreachable for five minutes
    assert events.workers() == {"low@web-1": True}  # unknown, not down
    events.regained_stream()
    assert events.workers() == {"low@web-1": True}
    clock.now += 21  # 10 s before the loss + 21 s after it: past the 30 s timeout
    assert events.workers() == {"low@web-1": False}


def test_the_series_carries_the_host_part_and_the_node() -> None:
    clock = Clock()
    registry = CollectorRegistry()
    events = EventMonitor(None, registry, clock=clock)
    beat(events, "default@web-1.example")
    text = generate_latest(registry).decode()
    assert 'celery_worker_up{hostname="web-1.example",node="default@web-1.example"} 1.0' in text
