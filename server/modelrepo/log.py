"""structlog set-up: JSON lines for machines (systemd, log shippers), colours for people.

Request-scoped values (request_id, user, model) are bound with contextvars by the request
middleware, so every line logged while serving a request carries them without passing a logger.
"""

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Fields every line of this process carries (a worker's index and pid); empty in a single daemon.
_PROCESS_FIELDS: dict[str, Any] = {}


def set_process_fields(**fields: Any) -> None:
    """Tag every later line of this process, e.g. with its worker index, so the lines of N worker
    processes sharing one stream can be told apart. Survives ``configure_logging`` (SIGHUP)."""
    _PROCESS_FIELDS.update(fields)


def _add_process_fields(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in _PROCESS_FIELDS.items():
        event.setdefault(key, value)
    return event


def configure_logging(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    stream = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _add_process_fields,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if use_console:
        processors.append(structlog.dev.ConsoleRenderer())
    else:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # One write() per line, newline included (print() makes two): worker processes share one
        # stream (journald's socket, a file), and two half-lines glue into one nobody can parse.
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries that use stdlib logging (aiohttp, alembic) go to the same stream at WARNING+.
    logging.basicConfig(level=logging.WARNING, stream=stream, format="%(levelname)s %(name)s: %(message)s",
                        force=True)
