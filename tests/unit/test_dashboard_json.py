"""The Grafana dashboard's JSON (charts/pageserver-operator/files/dashboard.json) is well formed:
unique panel ids, panels inside the 24-column grid, every panel with a query and unique refIds,
and every variable a query uses defined. (Its queries are evaluated against a real Prometheus by
tests/observability/test_dashboard.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[2] / "charts" / "pageserver-operator" / "files" / "dashboard.json"
#: Grafana's own variables
BUILTIN = {"__rate_interval", "__range", "__interval"}


def test_the_dashboard_is_well_formed() -> None:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    defined = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "job", "tenant_id"} <= defined
    panels = [p for top in board["panels"] for p in (top, *top.get("panels", []))]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for p in panels:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            used = set(re.findall(r"\$(\w+)", t["expr"]))
            assert used <= defined | BUILTIN, f"{p['title']}: undefined {used - defined - BUILTIN}"
            assert t["datasource"]["uid"] == "${datasource}"
