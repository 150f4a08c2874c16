"""PNG plots of the benchmark's results, from the data ``python -m bench --json FILE`` writes.

``python -m bench ... --plots DIR`` plots the run it just made; ``python -m bench.plots A.json
[B.json ...] --out DIR`` plots earlier runs without running anything (several files: the
control-plane plots put their runs side by side). What is drawn:

- ``ratios-<server>.png``, per server of a run with download/upload shapes: one panel per shape,
  each method's throughput as a ratio to s5cmd's median in the same run (bar: the median of the
  rounds; whiskers: the slowest and the fastest round), and for downloads the "durable" ratio
  too (wall time plus the ``sync`` timed right after, against s5cmd's). The ratios are the
  "x s5cmd" column of `bench.report` (median of the rates over s5cmd's median rate). Given
  several such runs, ``ratios-<server>-<i>.png`` for the i-th.
- ``active-over-time.png``: for each control-plane run (``--controlplane N``, one operator;
  ``--managers M``, the placement group), the Tenants Ready/Active over the seconds since the
  first create, as the harness sampled them (and, for a placement run, the leader's placements).
- ``time-to-active.png``: seconds from the first create to all Active against N, one series
  per M (log-log); for one operator also the restart (the same N Active again).

Invariants: a pure function of the result data (no process, no network); files are written only
into the output directory, named as above; matplotlib is imported when plotting, not with this
module (the bench and its tests start without it), and draws with its Agg renderer (no display);
the PNGs are quantized to 128 colours to stay small enough for the docs (tens of KiB).
A row a run marked not ok is left out, as in the tables. A crash leaves at most a partly written
PNG, replaced by the next run.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import report

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REF = "s5cmd"
DPI = 100


@dataclass(frozen=True)
class Ratio:
    """One bar: a method's rate over the reference's median rate in the same (server, shape)."""

    label: str
    median: float
    low: float
    high: float
    runs: int
    durable: tuple[float, float, float] | None = None  # median, low, high


@dataclass(frozen=True)
class Curve:
    """One control-plane run: how many Tenants were Active (Ready) when."""

    label: str
    tenants: int
    managers: int
    seconds: list[float]
    active: list[float]
    placed: list[float] | None  # the leader's placements (placement runs)
    all_active: float | None  # seconds to all Active; None if the run timed out
    restart: float | None  # one operator: seconds until all Active again after a restart
    commit: str
    created: float | None = None  # seconds until the harness had created every Tenant object
    restart_short: tuple[float, float] | None = None  # a restart that ended short: (seconds, Active)


def ratios(by_method: Mapping[str, Sequence[report.Row]], download: bool) -> list[Ratio]:
    """The bars of one (server, shape): every method over s5cmd; for a download also the
    durable ratio and our engine's own time (attach start to Active), as the report has them.

    The rate is taken as 1/wall: the bytes or objects per second of a shape only scale it, and
    cancel in the ratio. Empty if the reference has no good run."""

    def rate(key: str) -> Callable[[report.Row], float | None]:
        return lambda r: 1.0 / r[key] if r.get(key) else None

    def durable_rate(r: report.Row) -> float | None:
        return 1.0 / (r["wall"] + r["sync"]) if r.get("wall") and r.get("sync") is not None else None

    ref = report.med(report.per_run(by_method.get(REF, []), rate("wall")))
    ref_durable = report.med(report.per_run(by_method.get(REF, []), durable_rate))
    if not ref or math.isnan(ref):
        return []
    out: list[Ratio] = []
    for name, rows in by_method.items():
        series = [(name, rate("wall"))]
        if download and rows and rows[0].get("engine_wall"):
            series.append((f"{name} (engine)", rate("engine_wall")))
        for label, fn in series:
            xs = [x / ref for x in report.per_run(rows, fn)]
            if not xs:
                continue
            d = None
            if download and label == name and ref_durable and not math.isnan(ref_durable):
                ds = [x / ref_durable for x in report.per_run(rows, durable_rate)]
                d = (report.med(ds), min(ds), max(ds)) if ds else None
            out.append(Ratio(label, report.med(xs), min(xs), max(xs), len(xs), d))
    return out


def curves(results: Mapping[str, Any]) -> list[Curve]:
    """The control-plane runs of one result file: ``controlplane`` (one operator) and
    ``placement`` (M managers); also the bare dict ``python -m bench.controlplane`` or
    ``bench.placement`` writes."""
    commit = str(results.get("meta", {}).get("git", "?"))
    found: list[tuple[str, Mapping[str, Any]]] = []
    for key in ("controlplane", "placement"):
        if key in results:
            found.append((key, results[key]))
    if not found and "samples" in results and "tenants" in results:
        found.append(("placement" if "managers" in results else "controlplane", results))
    out: list[Curve] = []
    for kind, r in found:
        short: tuple[float, float] | None = None
        samples = r.get("samples") or []
        n = int(r["tenants"])
        if kind == "controlplane":
            m, total = 1, r.get("seconds_to_all_ready")
            complete = r.get("ready") == n
            rs = r.get("restart") or {}
            restart = rs.get("seconds_to_all_active") if rs.get("active", n) >= n else None
            if rs and restart is None:
                short = (float(rs["seconds_to_all_active"]), float(rs.get("active", 0)))
            placed = None
        else:
            m, total = int(r["managers"]), r.get("seconds_to_all_active")
            complete = bool(r.get("complete"))
            restart = None
            placed = [float(s[2]) for s in samples]
        out.append(
            Curve(
                label=f"{n:,} Tenants, {'one operator' if m == 1 else f'{m} managers'} (git {commit})",
                tenants=n,
                managers=m,
                seconds=[float(s[0]) for s in samples],
                active=[float(s[1]) for s in samples],
                placed=placed,
                all_active=float(total) if complete and total is not None else None,
                restart=float(restart) if restart is not None else None,
                commit=commit,
                created=float(r["seconds_to_create"]) if r.get("seconds_to_create") is not None else None,
                restart_short=short,
            )
        )
    return out


# ---- drawing ------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path, dpi: int) -> Path:
    """Render with Agg and write a PNG of 128 palette colours (a third of the RGBA file's size,
    the same to the eye), without text chunks: the bytes depend on the data and the versions."""
    import io

    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png", metadata={"Software": None})
    buf.seek(0)
    with Image.open(buf) as img:
        img.convert("RGB").quantize(colors=128, dither=Image.Dither.NONE).save(
            path, format="PNG", optimize=True
        )
    return path


def _provenance(meta: Mapping[str, Any]) -> str:
    return f"{meta.get('date', '?')}, git {meta.get('git', '?')}: {meta.get('command', '?')}"


def _shape_title(key: str, datasets: Mapping[str, Any]) -> tuple[str, bool]:
    """A panel's title and whether the shape is a download (durable ratio drawn)."""
    from bench.workloads import SHAPES

    shape = key.split("/", 1)[-1]
    info = datasets.get(key, {})
    known = SHAPES.get(shape)
    title = f"{shape}: {known.title}" if known else shape
    if info:
        title += f"\n({info.get('objects')} objects, {info.get('layer_bytes', 0) / report.MiB:.0f} MiB)"
    return title, (known.kind == "download") if known else True


def plot_ratios(
    server: str,
    shapes: Mapping[str, Mapping[str, Sequence[report.Row]]],
    datasets: Mapping[str, Any],
    meta: Mapping[str, Any],
    path: Path,
    dpi: int,
) -> Path:
    keys = list(shapes)
    methods: list[str] = []
    for key in keys:
        for r in ratios(shapes[key], download=True):
            if r.label not in methods:
                methods.append(r.label)
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    cols = min(len(keys), 2)
    rows = math.ceil(len(keys) / cols)
    fig = _figure(5.2 * cols, 0.5 + 0.42 * max(len(methods), 3) * rows + 0.9 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, key in enumerate(keys):
        ax = axes[i // cols][i % cols]
        title, download = _shape_title(key, datasets)
        bars = ratios(shapes[key], download=download)
        height = 0.38 if download else 0.7
        for j, b in enumerate(bars):
            y = -j
            ax.barh(
                y,
                b.median,
                height=height,
                color=colors[b.label],
                xerr=[[b.median - b.low], [b.high - b.median]],
                capsize=3,
            )
            ax.text(b.high, y, f" {b.median:.2f}", va="center", fontsize=8)
            if b.durable:
                dm, dlo, dhi = b.durable
                ax.barh(
                    y - height,
                    dm,
                    height=height,
                    color=colors[b.label],
                    alpha=0.35,
                    hatch="//",
                    xerr=[[dm - dlo], [dhi - dm]],
                    capsize=3,
                )
                ax.text(dhi, y - height, f" {dm:.2f} durable", va="center", fontsize=7)
        ax.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_yticks([-j - (height / 2 if b.durable else 0) for j, b in enumerate(bars)])
        ax.set_yticklabels([b.label for b in bars], fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"throughput ÷ {REF} median (1 = {REF})", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_xlim(0, max([b.high for b in bars] + [b.durable[2] for b in bars if b.durable] + [1.0]) * 1.3)
    for i in range(len(keys), rows * cols):
        axes[i // cols][i % cols].set_visible(False)
    fig.suptitle(
        f"{server}: throughput as a ratio to {REF} (bar: median of the rounds, whiskers: slowest and fastest round; "
        "hatched: durable, i.e. wall + the sync after)",
        fontsize=9,
    )
    fig.supxlabel(_provenance(meta), x=0.01, ha="left", fontsize=7, color="dimgray")
    return _save(fig, path, dpi)


def plot_active(runs: Sequence[Curve], path: Path, dpi: int) -> Path:
    cols = min(len(runs), 3)
    rows = math.ceil(len(runs) / cols)
    fig = _figure(4.2 * cols, 0.4 + 3.0 * rows)
    axes = [ax for row in fig.subplots(rows, cols, squeeze=False) for ax in row]
    for ax in axes[len(runs) :]:
        ax.set_visible(False)
    for ax, c in zip(axes, runs, strict=False):
        ax.plot(c.seconds, c.active, color="C0", label="Active (Ready)")
        if c.placed is not None:
            ax.plot(c.seconds, c.placed, color="C1", linestyle="--", label="placed by the leader")
        ax.axhline(c.tenants, color="gray", linewidth=0.6)
        if c.created is not None:
            ax.axvline(
                c.created, color="gray", linewidth=0.8, linestyle=":", label="all Tenant objects created"
            )
        done = f"all Active in {c.all_active:.0f} s" if c.all_active is not None else "not all Active"
        who = "one operator" if c.managers == 1 else f"{c.managers} managers"
        ax.set_title(
            f"{c.tenants:,} Tenants, {who}: {done}\n(git {c.commit})",
            fontsize=8,
        )
        ax.set_xlabel("seconds since the first create", fontsize=8)
        ax.set_ylabel("Tenants", fontsize=8)
        ax.set_xlim(left=0)
        ax.set_ylim(0, c.tenants * 1.05)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Control plane: Tenants Active over time (the harness's samples)", fontsize=9)
    return _save(fig, path, dpi)


def plot_time_to_active(runs: Sequence[Curve], path: Path, dpi: int) -> Path:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig = _figure(5.6, 3.8)
    ax = fig.subplots()
    by_m: dict[int, list[Curve]] = {}
    for c in runs:
        by_m.setdefault(c.managers, []).append(c)
    for i, (m, cs) in enumerate(sorted(by_m.items())):
        pts = sorted((c.tenants, c.all_active) for c in cs if c.all_active is not None)
        label = "1 operator" if m == 1 else f"{m} managers (placement)"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=f"C{i}", label=label)
        for n, s in pts:
            ax.annotate(f"{s:.0f} s", (n, s), textcoords="offset points", xytext=(6, -3), fontsize=7)
        restarts = sorted((c.tenants, c.restart) for c in cs if c.restart is not None)
        if restarts:
            ax.plot(
                [p[0] for p in restarts],
                [p[1] for p in restarts],
                marker="s",
                fillstyle="none",
                linestyle=":",
                color=f"C{i}",
                label=f"{label}: restart, all Active again",
            )
            for n, s in restarts:
                ax.annotate(
                    f"{s:.0f} s", (n, s), textcoords="offset points", xytext=(-6, -3), ha="right", fontsize=7
                )
        for c in cs:
            if c.restart_short is not None:
                secs, active = c.restart_short
                ax.plot([c.tenants], [secs], marker="x", color="red", linestyle="none")
                ax.annotate(
                    f"restart: {active:,.0f} of {c.tenants:,} Active after {secs:.0f} s",
                    (c.tenants, secs),
                    textcoords="offset points",
                    xytext=(0, -12),
                    ha="center",
                    fontsize=7,
                    color="red",
                )
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        axis.set_minor_formatter(NullFormatter())
    ax.margins(0.12)
    ax.set_xlabel("Tenants created at once (N)", fontsize=8)
    ax.set_ylabel("seconds from the first create to all Active", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(fontsize=7, loc="lower right")
    commits = sorted({c.commit for c in runs})
    ax.set_title(f"Control plane: time to all Active against N (git {', '.join(commits)})", fontsize=9)
    return _save(fig, path, dpi)


def write(results: Sequence[Mapping[str, Any]], out: Path, dpi: int = DPI) -> list[Path]:
    """Plot one or more result dicts (``--json``'s structure) into ``out``; the files written."""
    written: list[Path] = []
    with_runs = [r for r in results if r.get("runs")]
    for i, r in enumerate(with_runs):
        by_server: dict[str, dict[str, Mapping[str, Sequence[report.Row]]]] = {}
        for key, by_method in r["runs"].items():
            by_server.setdefault(key.split("/", 1)[0], {})[key] = by_method
        suffix = f"-{i + 1}" if len(with_runs) > 1 else ""
        for server, shapes in by_server.items():
            shapes = {k: v for k, v in shapes.items() if ratios(v, download=False)}
            if shapes:
                path = out / f"ratios-{server}{suffix}.png"
                written.append(
                    plot_ratios(server, shapes, r.get("datasets", {}), r.get("meta", {}), path, dpi)
                )
    runs = [c for r in results for c in curves(r) if c.seconds]
    runs.sort(key=lambda c: (c.tenants, c.managers))
    if runs:
        written.append(plot_active(runs, out / "active-over-time.png", dpi))
        written.append(plot_time_to_active(runs, out / "time-to-active.png", dpi))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.plots", description=__doc__.split("\n\n")[0])
    p.add_argument("json", type=Path, nargs="+", help="results written by python -m bench --json")
    p.add_argument("--out", type=Path, required=True, help="directory for the PNG files")
    p.add_argument("--dpi", type=int, default=DPI)
    args = p.parse_args(argv)
    for path in write([json.loads(f.read_text()) for f in args.json], args.out, args.dpi):
        print(f"{path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
