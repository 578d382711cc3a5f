"""Logging setup (structlog): JSON lines in deployment, console in development. The only place
logging is configured; everything else does `log = get_logger(__name__)`."""

import logging
import sys
from typing import Any

import structlog


def configure(*, json: bool = True, level: str = "INFO") -> None:
    """Configure structlog once, at daemon start."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (structlog.processors.JSONRenderer() if json
                     else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        # One write per line (print() writes the newline separately): KDC workers share
        # stderr, and interleaved halves would corrupt the JSON lines.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
