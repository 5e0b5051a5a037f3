"""Reading what ansible-playbook printed: the reported errors and the PLAY RECAP."""

from __future__ import annotations

import re


def failure_message(output: str) -> str:
    """What Ansible reports as the error (``[ERROR]: ...`` up to ``Origin:``), every one."""
    blocks = re.findall(r"^\[ERROR\]: (.*?)(?=^Origin: |^$)", output, re.MULTILINE | re.DOTALL)
    assert blocks, output
    return "\n".join(blocks)


def recap(output: str) -> dict[str, dict[str, int]]:
    """``changed``, ``failed`` and ``unreachable`` per host from the PLAY RECAP."""
    hosts = {}
    for match in re.finditer(r"^(\S+)\s+: ok=\d+\s+(.*)$", output, re.MULTILINE):
        counts = dict(pair.split("=") for pair in match.group(2).split())
        hosts[match.group(1)] = {k: int(counts[k]) for k in ("changed", "failed", "unreachable")}
    return hosts
