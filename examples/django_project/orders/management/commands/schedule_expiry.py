"""``manage.py schedule_expiry --every SECONDS``: the periodic task that expires stale
orders, kept in the database for django-celery-beat's ``DatabaseScheduler``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django_celery_beat.models import IntervalSchedule, PeriodicTask

NAME = "expire stale orders"


class Command(BaseCommand):
    """Create or update the ``expire stale orders`` periodic task."""

    help = "Create or update the periodic task that runs orders.expire_stale_orders."

    def add_arguments(self, parser: CommandParser) -> None:
        """``--every``: the interval in seconds."""
        parser.add_argument("--every", type=int, default=600, help="Seconds between runs.")

    def handle(self, *args: Any, **options: Any) -> None:
        """Save the schedule and the task (Beat picks the change up by itself)."""
        every = options["every"]
        if every < 1:
            raise CommandError("--every must be at least 1 second")
        schedule, _ = IntervalSchedule.objects.get_or_create(
            every=every, period=IntervalSchedule.SECONDS
        )
        task, created = PeriodicTask.objects.update_or_create(
            name=NAME,
            defaults={"task": "orders.expire_stale_orders", "interval": schedule, "enabled": True},
        )
        verb = "created" if created else "updated"
        self.stdout.write(
            self.style.SUCCESS(f"{verb} periodic task {task.name!r}: every {every} s")
        )
