"""Turn the raw runs into tables: medians with min-max, ratios to s5cmd, CPU, RSS, requests.

A *row* is one run as a JSON-able dict (see `bench.run`). Throughput is computed on the layer
bytes (the index, a few KiB, is left out for every tool alike). "durable" adds the ``sync(1)``
timed right after the run: s5cmd, rclone and curl never fsync, our attach fsyncs every file
and directory before it reports Active, so its ``sync`` finds nothing left to write.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

MiB = 1 << 20
GiB = 1 << 30

Row = dict[str, Any]


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def fmt_range(xs: Sequence[float], digits: int = 0) -> str:
    if not xs:
        return "-"
    f = f"{{:.{digits}f}}"
    return f"{f.format(med(xs))} [{f.format(min(xs))}-{f.format(max(xs))}]"


def per_run(rows: Sequence[Row], fn: Callable[[Row], float | None]) -> list[float]:
    out = []
    for r in rows:
        if not r.get("ok", True):
            continue
        v = fn(r)
        if v is not None:
            out.append(v)
    return out


def download_table(shape: str, objects: int, layer_bytes: int, by_method: dict[str, list[Row]]) -> list[str]:
    """Markdown table of one (server, shape)."""
    small = layer_bytes / max(objects, 1) < 256 * 1024
    unit = "obj/s" if small else "MiB/s"

    def rate(r: Row, wall_key: str = "wall") -> float | None:
        w = r.get(wall_key)
        if not w:
            return None
        return objects / w if small else layer_bytes / MiB / w

    def durable(r: Row) -> float | None:
        return (objects if small else layer_bytes / MiB) / (r["wall"] + r["sync"])

    ref = med(per_run(by_method.get("s5cmd", []), rate))
    lines = [
        f"| method | {unit} median [min-max] | x s5cmd | durable {unit} (+sync) | client CPU-s/GiB | "
        f"client ms CPU/object | peak RSS MiB | server CPU-s | GET/obj | HEAD/obj | other requests | runs ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows_out: list[tuple[str, list[Row], Callable[[Row], float | None]]] = []
    for name, rows in by_method.items():
        rows_out.append((name, rows, rate))
        if rows and rows[0].get("engine_wall"):
            rows_out.append(
                (f"{name} (engine: attach start → Active)", rows, lambda r: rate(r, "engine_wall"))
            )
    for name, rows, fn in rows_out:
        rates = per_run(rows, fn)
        ratio = med(rates) / ref if ref and rates else float("nan")
        engine_row = "(engine" in name
        cpu = per_run(rows, lambda r: r["cpu"] / (layer_bytes / GiB))
        cpu_obj = per_run(rows, lambda r: r["cpu"] * 1000 / objects)
        rss = per_run(rows, lambda r: r["rss"])
        scpu = per_run(rows, lambda r: r["server_cpu"])
        gets = per_run(rows, lambda r: r["requests"].get("GET", 0) / objects)
        heads = per_run(rows, lambda r: r["requests"].get("HEAD", 0) / objects)
        other = per_run(rows, lambda r: sum(v for k, v in r["requests"].items() if k not in ("GET", "HEAD")))
        ok = sum(1 for r in rows if r.get("ok", True))
        if engine_row:
            lines.append(f"| {name} | {fmt_range(rates)} | {ratio:.2f} | | | | | | | | | |")
            continue
        lines.append(
            f"| {name} | {fmt_range(rates)} | {ratio:.2f} | {fmt_range(per_run(rows, durable))} | "
            f"{med(cpu):.2f} | {med(cpu_obj):.2f} | {max(rss) if rss else 0:.0f} | {med(scpu):.2f} | "
            f"{med(gets):.2f} | {med(heads):.2f} | {med(other):.0f} | {ok}/{len(rows)} |"
        )
    return lines


def upload_table(objects: int, layer_bytes: int, by_method: dict[str, list[Row]]) -> list[str]:
    def rate(r: Row) -> float:
        return float(layer_bytes / MiB / r["wall"])

    ref = med(per_run(by_method.get("s5cmd", []), rate))
    lines = [
        "| method | MiB/s median [min-max] | x s5cmd | client CPU-s/GiB | peak RSS MiB | server CPU-s | "
        "PUT-type requests | GET | other | runs ok |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in by_method.items():
        rates = per_run(rows, rate)
        ratio = med(rates) / ref if ref and rates else float("nan")
        cpu = per_run(rows, lambda r: r["cpu"] / (layer_bytes / GiB))
        rss = per_run(rows, lambda r: r["rss"])
        scpu = per_run(rows, lambda r: r["server_cpu"])
        puts = per_run(
            rows, lambda r: sum(v for k, v in r["requests"].items() if k.startswith(("PUT", "POST")))
        )
        gets = per_run(rows, lambda r: r["requests"].get("GET", 0))
        other = per_run(
            rows,
            lambda r: sum(v for k, v in r["requests"].items() if not k.startswith(("PUT", "POST", "GET"))),
        )
        ok = sum(1 for r in rows if r.get("ok", True))
        lines.append(
            f"| {name} | {fmt_range(rates)} | {ratio:.2f} | {med(cpu):.2f} | {max(rss) if rss else 0:.0f} | "
            f"{med(scpu):.2f} | {med(puts):.0f} | {med(gets):.0f} | {med(other):.0f} | {ok}/{len(rows)} |"
        )
    return lines


def resume_table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| round | on disk at kill MiB | complete layers | in flight at kill MiB | fetched again MiB | "
        "≤ in flight | rerun s (to Active) | rerun GETs | rerun peak RSS MiB | stray temp files | ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['round']} | {r['on_disk_at_kill'] / MiB:.0f} | {r['complete_layers']} | "
            f"{r['in_flight'] / MiB:.1f} | {r['refetched'] / MiB:.1f} | "
            f"{'yes' if r['refetched'] <= r['in_flight'] else 'NO'} | {r['wall']:.2f} | "
            f"{r['requests'].get('GET', 0)} | {r['rss']:.0f} | {r['stray']} | {'ok' if r['ok'] else r['problem']} |"
        )
    return lines
