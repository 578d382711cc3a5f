"""The JSON log line: the event's keys, then event, level and an ISO 8601 UTC timestamp; a
logged exception carries its traceback."""

import json
from datetime import UTC, datetime, timedelta

import structlog

from common.log import configure, get_logger


def test_json_lines_and_tracebacks(capsys):
    configure(json=True)
    try:
        log = get_logger("test_log")
        log.info("ap_request", peer="127.0.0.1:4000", spi=None, raw=b"\x01")
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            log.exception("internal_error", peer="127.0.0.1:4000")
        first, second = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        structlog.reset_defaults()
    assert list(first)[:5] == ["peer", "spi", "raw", "event", "level"]
    assert first["event"] == "ap_request" and first["level"] == "info"
    assert first["spi"] is None and first["raw"] == "b'\\x01'"
    assert first["timestamp"].endswith("Z") and first["timestamp"][10] == "T"
    stamp = datetime.fromisoformat(first["timestamp"])  # ISO 8601, microseconds, UTC
    assert stamp.tzinfo == UTC and abs(datetime.now(UTC) - stamp) < timedelta(seconds=5)
    assert len(first["timestamp"]) == len("2026-12-04T15:19:28.003378Z")
    assert second["level"] == "error"
    assert "ZeroDivisionError: division by zero" in second["exception"]
    assert "exc_info" not in second


def test_bound_context_contextvars_and_threshold(capsys):
    configure(json=True, level="INFO")
    try:
        log = get_logger("test_log").bind(component="kdc")
        structlog.contextvars.bind_contextvars(worker=1)
        try:
            log.debug("not_written")
            log.info("as_req", code=0)
            log.warning("slow", component="override")
            try:
                {}["missing"]
            except KeyError:
                log.error("failed", exc_info=True)
        finally:
            structlog.contextvars.clear_contextvars()
        log.info("after")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        structlog.reset_defaults()
    assert [line["event"] for line in lines] == ["as_req", "slow", "failed", "after"]
    assert lines[0] == {"component": "kdc", "code": 0, "worker": 1, "event": "as_req",
                        "level": "info", "timestamp": lines[0]["timestamp"]}
    assert lines[1]["component"] == "override" and lines[1]["level"] == "warning"
    assert "KeyError: 'missing'" in lines[2]["exception"] and lines[2]["level"] == "error"
    assert "worker" not in lines[3]


def test_a_real_file_gets_whole_lines_through_its_descriptor(tmp_path, monkeypatch):
    path = tmp_path / "daemon.log"
    with path.open("w") as stderr:
        monkeypatch.setattr("sys.stderr", stderr)
        configure(json=True)
        try:
            log = get_logger("test_log")
            assert log.bind()._fd == stderr.fileno()
            for n in range(3):
                log.info("tgs_req", n=n, server="sigctl/sc1")
        finally:
            structlog.reset_defaults()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(line["event"], line["n"]) for line in lines] == [("tgs_req", n) for n in range(3)]
