#!/usr/bin/env python3
"""A webhook receiver for Alertmanager that logs every alert it gets as one JSON line.

The local stack's receiver (`make alerts` shows its log); the alert-delivery test and the
alertmanager role's molecule scenario use it too. Standard library only, so it runs on any
Python 3.11+ (the worker image, a molecule host, the test controller).

    alert_log.py --address 0.0.0.0 --port 9095 [--file alerts.jsonl]

POST (any path): an Alertmanager webhook payload (version 4); each alert in it becomes a line
on stdout (and appended to --file) with the receiver, status, labels and annotations.
GET: 200 "ok" (health check).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_LOCK = threading.Lock()


def alert_lines(payload: dict[str, Any], received_at: str) -> list[str]:
    """One JSON line per alert of a webhook payload."""
    lines = []
    for alert in payload.get("alerts", []):
        labels = alert.get("labels", {})
        lines.append(
            json.dumps(
                {
                    "received_at": received_at,
                    "receiver": payload.get("receiver", ""),
                    "status": alert.get("status", payload.get("status", "")),
                    "alertname": labels.get("alertname", ""),
                    "severity": labels.get("severity", ""),
                    "labels": labels,
                    "annotations": alert.get("annotations", {}),
                    "starts_at": alert.get("startsAt", ""),
                    "ends_at": alert.get("endsAt", ""),
                    "group_key": payload.get("groupKey", ""),
                },
                sort_keys=True,
            )
        )
    return lines


def make_handler(log_file: str | None) -> type[BaseHTTPRequestHandler]:
    """A request handler class that writes to stdout and ``log_file``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._reply(200, b"ok\n")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            try:
                payload = json.loads(self.rfile.read(length))
            except ValueError:
                self._reply(400, b"expected a JSON webhook payload\n")
                return
            lines = alert_lines(payload, datetime.now(UTC).isoformat(timespec="seconds"))
            with _LOCK:
                for line in lines:
                    print(line, flush=True)
                if log_file:
                    with open(log_file, "a", encoding="utf-8") as out:
                        out.writelines(line + "\n" for line in lines)
            self._reply(200, b"ok\n")

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Requests are not logged: the alert lines are the log."""

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9095)
    parser.add_argument("--file", help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.address, args.port), make_handler(args.file))
    print(f"alert_log: listening on {args.address}:{args.port}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
