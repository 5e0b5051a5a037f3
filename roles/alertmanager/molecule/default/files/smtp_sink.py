#!/usr/bin/env python3
"""A minimal SMTP server for the molecule scenario: accepts AUTH PLAIN and every mail, and
appends one JSON line per mail (login, sender, recipients, subject) to a file.

Test-only: no TLS, no checks; it exists so the verifier can see Alertmanager log in to the
smarthost with the password from the vault and deliver the e-mail. Standard library only.

    smtp_sink.py --port 2525 --file /var/lib/alert-sinks/mail.jsonl
"""

from __future__ import annotations

import argparse
import base64
import json
import socketserver
from email import message_from_bytes
from typing import Any


def address(argument: str) -> str:
    """The address of ``FROM:<a@b> BODY=8BITMIME`` or ``TO:<a@b>``."""
    return argument.split("<", 1)[1].split(">", 1)[0]


def make_handler(log_file: str) -> type[socketserver.StreamRequestHandler]:
    class Handler(socketserver.StreamRequestHandler):
        def reply(self, line: str) -> None:
            self.wfile.write(line.encode() + b"\r\n")

        def handle(self) -> None:
            mail: dict[str, Any] = {"login": None, "from": "", "to": []}
            self.reply("220 smtp-sink ESMTP")
            while line := self.rfile.readline():
                command = line.decode(errors="replace").rstrip("\r\n")
                verb, _, rest = command.partition(" ")
                verb = verb.upper()
                if verb in {"EHLO", "HELO"}:
                    self.wfile.write(b"250-smtp-sink\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n")
                elif verb == "AUTH":
                    mechanism, _, initial = rest.partition(" ")
                    if not initial:
                        self.reply("334 ")
                        initial = self.rfile.readline().decode().strip()
                    _, user, password = base64.b64decode(initial).decode().split("\0")
                    mail["login"] = [mechanism.upper(), user, password]
                    self.reply("235 2.7.0 authenticated")
                elif verb == "MAIL":
                    mail["from"] = address(rest)
                    self.reply("250 ok")
                elif verb == "RCPT":
                    mail["to"].append(address(rest))
                    self.reply("250 ok")
                elif verb == "DATA":
                    self.reply("354 end with <CRLF>.<CRLF>")
                    data = b""
                    while (chunk := self.rfile.readline()) not in {b".\r\n", b""}:
                        data += chunk
                    mail["subject"] = str(message_from_bytes(data)["Subject"] or "")
                    with open(log_file, "a", encoding="utf-8") as out:
                        out.write(json.dumps(mail, sort_keys=True) + "\n")
                    self.reply("250 queued")
                elif verb == "QUIT":
                    self.reply("221 bye")
                    return
                elif verb in {"RSET", "NOOP"}:
                    self.reply("250 ok")
                else:
                    self.reply("502 not implemented")

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--file", required=True)
    args = parser.parse_args()
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    with socketserver.ThreadingTCPServer((args.address, args.port), make_handler(args.file)) as s:
        s.serve_forever()


if __name__ == "__main__":
    main()
