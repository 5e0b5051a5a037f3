"""The benchmark report: the machine, the table, the chart, and the README section."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHART = Path("docs/img/bench-critical-wait.png")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def _first_line(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "not installed"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    os_release = dict(
        line.split("=", 1)
        for line in Path("/etc/os-release").read_text().splitlines()
        if "=" in line
    )
    redis_version = re.search(r"v=(\S+)", _first_line(["redis-server", "--version"]))
    import celery  # noqa: PLC0415

    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024),
        "os": os_release.get("PRETTY_NAME", platform.platform()).strip('"'),
        "python": platform.python_version(),
        "redis": redis_version.group(1) if redis_version else "?",
        "celery": celery.__version__,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    """The table: one (benchmark, result) row per figure."""
    a, b, c, d = (results[k] for k in ("throughput", "isolation", "replay", "exporter"))
    cpu, cmds = a["redis_cpu_ms_per_1000"], a["redis_commands_per_task"]
    table = [
        (f"(a) no-op drain, prefork x2, the `default` pool's arguments (median of {a['runs']}): "
         "stock Celery 5 on kombu's transport", f"{a['stock_tasks_per_s']} tasks/s"),
        ("(a) worker_app's worker and transport, plain Celery task",
         f"{a['plain_tasks_per_s']} tasks/s"),
        ("(a) worker_app, `RetryableTask` with metrics and every hook",
         f"{a['instrumented_tasks_per_s']} tasks/s"),
        ("(a) **plain ÷ stock, instrumented ÷ stock** (instrumented ÷ plain)",
         f"**{a['ratio_plain_to_stock']}, {a['ratio_instrumented_to_stock']}** "
         f"({a['ratio_instrumented_to_plain']})"),
        ("(a) Redis CPU per 1,000 tasks: stock / plain / instrumented",
         f"{cpu['stock']} / {cpu['plain']} / {cpu['instrumented']} ms"),
        ("(a) Redis commands per task: stock / plain / instrumented",
         f"{cmds['stock']} / {cmds['plain']} / {cmds['instrumented']}"),
        ("(a) one Redis core's ceiling at that cost (1 s ÷ CPU per task; README: Capacity): "
         "stock / plain / instrumented",
         " / ".join(f"{ceiling(cpu[v]):,}" for v in ("stock", "plain", "instrumented"))
         + " tasks/s"),
        (f"(b) `critical` enqueue→start p50 / p99, nothing else queued ({b['runs']} runs x "
         f"{b['critical_probes_per_run']} probes)", f"{b['idle_p50_ms']} / {b['idle_p99_ms']} ms"),
        (f"(b) the same with {b['low_backlog']:,} `low` tasks queued",
         f"{b['backlog_p50_ms']} / {b['backlog_p99_ms']} ms"),
        ("(b) **backlog ÷ idle** (p50, p99)",
         f"**{b['ratio_p50_backlog_to_idle']}, {b['ratio_p99_backlog_to_idle']}**"),
        (f"(c) `dlq replay --all` of {c['entries_per_run']:,} entries, batched publish + "
         f"conditional remove (median of {c['runs']})", f"{c['replays_per_s']} entries/s"),
        (f"(c) the console's bulk delete of a filtered {c['entries_per_run'] // 2:,}",
         f"{c['deletes_per_s']} entries/s"),
        (f"(d) exporter scrape, {d['queued']:,} queued over 4 queues x 4 priorities (p50 / max)",
         f"{d['scrape_ms_p50']} / {d['scrape_ms_max']} ms"),
    ]  # fmt: skip
    f = results.get("wakeup")
    if f:
        steps = f["by_queue_and_step"]
        stock_p50 = sorted(r["stock_p50_ms"] for r in steps.values())
        ours_p50 = sorted(r["worker_app_p50_ms"] for r in steps.values())
        ours_p99 = max(r["worker_app_p99_ms"] for r in steps.values())
        stock_p99 = max(r["stock_p99_ms"] for r in steps.values())
        table += [
            (f"(f) idle wake-up, publish→start per queue x priority step ({len(steps)} keys x "
             f"{f['probes_per_key']}), p50 range / worst p99: stock Celery",
             f"{stock_p50[0]} to {stock_p50[-1]} / {stock_p99} ms"),
            ("(f) the same, worker_app (its transport and producer)",
             f"{ours_p50[0]} to {ours_p50[-1]} / {ours_p99} ms"),
        ]  # fmt: skip
    g = results.get("idle")
    if g:
        table.append((
            f"(g) {g['consumers']} idle worker nodes on the 4 queues, Redis CPU / commands per "
            "second: stock (BRPOP) vs worker_app (poll by script)",
            f"{g['stock']['redis_cpu_ms_per_s']} ms, {g['stock']['commands_per_s']} vs "
            f"{g['worker_app']['redis_cpu_ms_per_s']} ms, {g['worker_app']['commands_per_s']}",
        ))  # fmt: skip
    h = results.get("publish")
    if h:
        table.append((
            f"(h) `delay()` p50 / p99 ({h['runs']} runs x {h['publishes_per_run']:,}): "
            "stock producer vs worker_app's (guard, headers, transport)",
            f"{h['stock_p50_ms']} / {h['stock_p99_ms']} vs "
            f"{h['worker_app_p50_ms']} / {h['worker_app_p99_ms']} ms",
        ))  # fmt: skip
    i = results.get("console_list")
    if i:
        table.append((
            f"(i) console: page 3 of the dead letters among {i['entries']:,} (median of "
            f"{i['reads']}), unfiltered / by task: page, JSON API",
            f"{i['page_ms']} / {i['page_by_task_ms']} ms, {i['api_ms']} / {i['api_by_task_ms']} ms",
        ))  # fmt: skip
    e = results.get("converge")
    if e:
        table += [
            (f"(e) `site.yml` first converge, {e.get('inventory', 'staging')} inventory on "
             f"{e['hosts']} containers",
             f"{e['converge_s']} s"),
            (f"(e) `site.yml` idempotent re-run, `changed=0` (median of {len(e['idempotent_s'])})",
             f"{e['idempotent_median_s']} s"),
        ]  # fmt: skip
    return table


def ceiling(cpu_ms_per_1000: float) -> int:
    """Tasks/s one Redis core would serve at this CPU cost per 1,000 tasks, rounded to 100."""
    return round(1_000_000 / cpu_ms_per_1000 / 100) * 100


def markdown(results: dict[str, Any]) -> str:
    """The README section: machine, table, chart."""
    m = results["machine"]
    lines = [
        BEGIN,
        f"Measured by `make bench` on {m['when'][:10]}: {m['cpus']} x {m['cpu_model']}, "
        f"{m['memory_gib']} GiB, {m['os']}, Python {m['python']}, Redis {m['redis']}, "
        f"Celery {m['celery']}.",
        "",
        "| Benchmark | Result |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows(results)),
        "",
        f"![critical-queue wait, idle vs 100,000 low tasks queued]({CHART.as_posix()})",
        END,
    ]
    return "\n".join(lines)


def update_readme(results: dict[str, Any], readme: Path = ROOT / "README.md") -> bool:
    """Replace the README's benchmark section; False when its markers are missing."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        return False
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + markdown(results) + tail)
    return True


def chart(samples_ms: dict[str, list[float]], backlog: int, path: Path = ROOT / CHART) -> None:
    """Cumulative distribution of the critical queue's wait, idle vs backlog."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for label, key, style in (("nothing else queued", "idle", "-"),
                              (f"{backlog:,} low tasks queued", "backlog", "--")):  # fmt: skip
        values = sorted(samples_ms[key])
        n = len(values)
        ax.step(values, [(i + 1) / n for i in range(n)], style, where="post",
                label=f"{label} (n={n})")  # fmt: skip
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("critical task: publish → start (ms, log scale)")
    ax.set_ylabel("share of tasks started")
    ax.set_title("Priority isolation: the critical pool's wait under a low backlog")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
