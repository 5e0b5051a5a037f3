"""``python -m worker_app.cli`` runs the ``worker-app`` command."""

from worker_app.cli import main

main(prog_name="worker-app")
