"""The JSON log line: the event's keys, then event, level and an ISO 8601 UTC timestamp; a
logged exception carries its traceback."""

import json

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
    assert second["level"] == "error"
    assert "ZeroDivisionError: division by zero" in second["exception"]
    assert "exc_info" not in second
