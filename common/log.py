"""Logging setup (structlog): JSON lines in deployment, console in development. The only place
logging is configured; everything else does `log = get_logger(__name__)`.

A JSON line is `{...the event's keys..., "event": ..., "level": ..., "timestamp": ...}` with an
ISO 8601 UTC timestamp; `log.exception` (or `exc_info=True`) adds the traceback as
"exception"; context bound with `bind` or `structlog.contextvars.bind_contextvars` is included.

The daemons write one line per request, so in deployment structlog's bound logger is
`JsonLines` (its `wrapper_class`): the line is built and written in one call, instead of a
bound-logger method, its processor chain and a WriteLogger, about ten Python calls a line.
A daemon runs a request after milliseconds of idling, with cold CPU caches, and there every
Python function touched costs: measured in the KDC (ad-hoc instrumentation, thread CPU time),
the summary line took 105-110 µs a request through the processor chain.
"""

import json
import logging
import os
import sys
import time
import traceback
from datetime import UTC, datetime
from typing import Any

import structlog

# JSONEncoder(default=repr).encode (repr: structlog's JSONRenderer does the same for what
# JSON cannot hold) builds its C encoder anew for every call; it is built once here.
_encode_fallback = json.JSONEncoder(default=repr).encode
_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_chunks = _make_encoder and _make_encoder(None, repr, json.encoder.encode_basestring_ascii,
                                          None, ": ", ", ", False, False, True)


def _encode_json(value: dict[str, Any]) -> str:
    if not _chunks:  # pragma: no cover - a Python without json's C accelerator
        return _encode_fallback(value)
    return "".join(_chunks(value, 0))


_second = [-1, ""]  # the last whole second seen, and its text "YYYY-MM-DDTHH:MM:SS"


def _timestamp() -> str:
    """ISO 8601 UTC with microseconds and Z, as structlog's TimeStamper(fmt="iso", utc=True)
    writes it; the date and time of day are formatted once a second."""
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second[:] = [second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")]
    return f"{_second[1]}.{int((now - second) * 1e6):06d}Z"


class JsonLines:
    """structlog's bound logger for JSON lines: each call writes one whole line with one write
    (KDC workers share stderr: interleaved halves would corrupt the lines). `threshold` is
    the lowest level written (logging's numbers), set by `configure`."""

    threshold = logging.INFO

    def __init__(self, logger: Any, processors: Any = None, context: Any = None) -> None:
        self._file = logger
        self._context: dict[str, Any] = dict(context or {})
        try:  # a real file: its descriptor, written directly (no text layer, no flush)
            self._fd: int | None = logger.fileno()
        except (AttributeError, OSError, ValueError):  # e.g. a test's capture
            self._fd = None

    def _emit(self, level: str, number: int, event: str | None, fields: dict[str, Any],
              exc_info: Any = None) -> None:
        if number < self.threshold:
            return
        line = {**self._context, **fields} if self._context else fields
        for key, value in structlog.contextvars.get_contextvars().items():
            line.setdefault(key, value)
        if event is not None:
            line["event"] = event
        exc_info = line.pop("exc_info", exc_info)
        if exc_info:
            if not isinstance(exc_info, BaseException | tuple):
                exc_info = sys.exc_info()
            line["exception"] = "".join(traceback.format_exception(
                *(exc_info if isinstance(exc_info, tuple) else (None, exc_info, None))))
        line["level"] = level
        line["timestamp"] = _timestamp()
        text = _encode_json(line) + "\n"
        if self._fd is not None:
            data = text.encode()
            while data:  # a long line (a traceback) into a pipe may take more than one write
                data = data[os.write(self._fd, data):]
        else:
            self._file.write(text)
            self._file.flush()

    def debug(self, event: str | None = None, **fields: Any) -> None:
        self._emit("debug", logging.DEBUG, event, fields)

    def info(self, event: str | None = None, **fields: Any) -> None:
        self._emit("info", logging.INFO, event, fields)

    def warning(self, event: str | None = None, **fields: Any) -> None:
        self._emit("warning", logging.WARNING, event, fields)

    warn = warning

    def error(self, event: str | None = None, **fields: Any) -> None:
        self._emit("error", logging.ERROR, event, fields)

    def critical(self, event: str | None = None, **fields: Any) -> None:
        self._emit("critical", logging.CRITICAL, event, fields)

    def exception(self, event: str | None = None, **fields: Any) -> None:
        self._emit("error", logging.ERROR, event, fields, exc_info=True)

    def bind(self, **values: Any) -> "JsonLines":
        return JsonLines(self._file, None, {**self._context, **values})

    def new(self, **values: Any) -> "JsonLines":
        return JsonLines(self._file, None, values)

    def unbind(self, *keys: str) -> "JsonLines":
        return JsonLines(self._file, None,
                         {k: v for k, v in self._context.items() if k not in keys})

    try_unbind = unbind


def configure(*, json: bool = True, level: str = "INFO") -> None:
    """Configure structlog once, at daemon start."""
    threshold = logging.getLevelName(level)
    if json:
        JsonLines.threshold = threshold
        structlog.configure(processors=[], wrapper_class=JsonLines,
                            logger_factory=lambda *_: sys.stderr,
                            cache_logger_on_first_use=True)
        return
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars,
                    structlog.processors.format_exc_info,
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        # One write per line (print() writes the newline separately): KDC workers share
        # stderr, and interleaved halves would corrupt the lines.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
