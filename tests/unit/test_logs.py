"""`logs`: every line carries the tenant, timeline and object it is about, as ``key=value``
text or one JSON object per line."""

from __future__ import annotations

import json
import logging

import pytest

from pageserver_operator import logs


def record(**extra: object) -> logging.LogRecord:
    r = logging.LogRecord("pageserver_operator.engine.tenant", logging.INFO, __file__, 1, "attached %d", (3,), None)
    for k, v in extra.items():
        setattr(r, k, v)
    return r


def test_text_lines_end_with_the_context() -> None:
    f = logs.TextFormatter("%(levelname)s %(name)s: %(message)s")
    line = f.format(record(tenant_id="t1", timeline_id="tl1", k8s_ref={"namespace": "ns", "name": "x"}))
    assert line == "INFO pageserver_operator.engine.tenant: attached 3 tenant_id=t1 timeline_id=tl1 object=ns/x"
    assert f.format(record()) == "INFO pageserver_operator.engine.tenant: attached 3"
    assert f.format(record(tenant_id=None, k8s_ref={"name": "x"})).endswith("attached 3 object=x")


def test_json_lines_are_one_object_with_the_context_and_the_exception() -> None:
    f = logs.JsonFormatter()
    doc = json.loads(f.format(record(tenant_id="t1")))
    assert {k: doc[k] for k in ("level", "logger", "message", "tenant_id")} == {
        "level": "INFO", "logger": "pageserver_operator.engine.tenant", "message": "attached 3", "tenant_id": "t1",
    }  # fmt: skip
    assert "timeline_id" not in doc and "exception" not in doc
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failed = record()
        failed.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(f.format(failed))["exception"]


def test_setup_installs_one_handler_and_quiets_the_libraries() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    noisy = {name: logging.getLogger(name).level for name in ("botocore", "boto3", "urllib3", "s3transfer")}
    try:
        logs.setup("json", "DEBUG")
        assert len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, logs.JsonFormatter)
        assert root.level == logging.DEBUG
        assert logging.getLogger("botocore").level == logging.WARNING
        logs.setup("text", "INFO")
        assert isinstance(root.handlers[0].formatter, logs.TextFormatter)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        for name, old in noisy.items():
            logging.getLogger(name).setLevel(old)


def test_the_generation_and_the_pageserver_are_on_every_line(monkeypatch: pytest.MonkeyPatch) -> None:
    f = logs.TextFormatter("%(message)s")
    assert f.format(record(tenant_id="t1", generation="7")) == "attached 3 tenant_id=t1 generation=7"
    monkeypatch.setattr(logs, "_PROCESS_CONTEXT", {})
    logs.set_process_context(pageserver="ps-0")
    assert f.format(record(tenant_id="t1", generation="7")) == "attached 3 tenant_id=t1 generation=7 pageserver=ps-0"
    assert f.format(record()) == "attached 3 pageserver=ps-0"
