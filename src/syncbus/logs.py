"""Log output of ``syncbus run``: readable text, or one JSON object per line for a log pipeline.

``--log-format json`` (or ``SYNCBUS_LOG_FORMAT=json``) writes each record as
one line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, then
whatever the call passed as ``extra`` (``route``, ``record_id``, ...), and
``exception`` with the traceback when there is one. Log shippers (Vector,
Fluent Bit, Loki's promtail) then index fields instead of parsing prose.

Personal data: ``SYNCBUS_LOG_MASK=phone,id_card`` replaces the value of those
keys with ``***`` -- in extra fields (at any depth) and in ``key=value`` /
``key: value`` fragments of the message -- in both formats. Payloads are not
logged: an extra field named like one (``payload``, ``body``, ``value``, ...)
is written as ``<omitted>`` unless ``SYNCBUS_LOG_PAYLOADS=1``, because a
record body is exactly where the personal data lives and a debugging
``extra={"payload": ...}`` must not quietly leak it into a log archive.

Every logger ends at the one root handler installed here: syncbus's own,
aiokafka's (they propagate; ``bus/kafka_logging.py`` only adds a rate limit)
and uvicorn's, which uvicorn gives handlers of its own --
:func:`adopt_library_loggers` takes those away once uvicorn configured them,
so a JSON log never has a plain-text line in the middle.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import IO, Any

from .errors import SyncbusError

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "***"
OMITTED = "<omitted>"
PAYLOAD_KEYS = frozenset({"payload", "body", "value", "record_value", "content", "data"})
# Libraries that log one line per request or metadata refresh at INFO: kept at WARNING and above.
CHATTY = ("httpx", "httpcore", "aiokafka")
# uvicorn's loggers, which its default config gives handlers of their own (propagate=False).
UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access")
_TRUE = {"1", "true", "yes", "on"}

# Every attribute a plain LogRecord has: anything else on a record came from ``extra``
# (except uvicorn's ``color_message``, the same text with terminal colour codes).
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime",
                                                                                   "taskName", "color_message"}


class LogSetupError(SyncbusError):
    """The log settings cannot be used as given (unknown format, bad level)."""


class Masker:
    """Replaces the values of configured keys, wherever a log record may carry them."""

    def __init__(self, keys: Iterable[str] = (), *, payloads: bool = False) -> None:
        self.keys = frozenset(k.strip().lower() for k in keys if k.strip())
        self.payloads = payloads
        self._pattern: re.Pattern[str] | None = None
        if self.keys:
            names = "|".join(re.escape(k) for k in sorted(self.keys, key=len, reverse=True))
            # key=value, key: value, "key": "value" -- the value quoted or up to a separator.
            self._pattern = re.compile(
                rf"""(?<![\w.-])(["']?)({names})\1(\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s,;&)\]}}]+)""",
                re.IGNORECASE)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Masker:
        return cls((env.get("SYNCBUS_LOG_MASK") or "").split(","),
                   payloads=(env.get("SYNCBUS_LOG_PAYLOADS") or "").strip().lower() in _TRUE)

    def text(self, message: str) -> str:
        """``phone=13812345678`` → ``phone=***`` for every configured key."""
        if self._pattern is None:
            return message
        return self._pattern.sub(lambda m: f"{m[1]}{m[2]}{m[1]}{m[3]}{_quoted(m[4])}", message)

    def value(self, key: str, value: Any) -> Any:
        """An extra field's value as it may be logged."""
        lowered = key.lower()
        if lowered in self.keys:
            return MASK
        if not self.payloads and lowered in PAYLOAD_KEYS:
            return OMITTED
        return self._nested(value)

    def _nested(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): self.value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._nested(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value


def _quoted(original: str) -> str:
    """Keep the quotes of a quoted value, so the masked line still parses as what it was."""
    return f"{original[0]}{MASK}{original[0]}" if original[:1] in ("'", '"') else MASK


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a call passed with ``extra=``, in the order given (None means "not given")."""
    return {k: v for k, v in record.__dict__.items()
            if k not in _STANDARD and not k.startswith("_") and v is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside values are escaped by JSON)."""

    def __init__(self, masker: Masker | None = None) -> None:
        super().__init__()
        self.masker = masker or Masker()

    def format(self, record: logging.LogRecord) -> str:
        m = self.masker
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": m.text(record.getMessage()),
        }
        for key, value in extras(record).items():
            if key not in out:  # the four fixed fields cannot be overwritten by an extra
                out[key] = m.value(key, value)
        if record.exc_info:
            out["exception"] = m.text(self.formatException(record.exc_info))
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic one-line text, with masked values and the extra fields as ``key=value`` at the end."""

    def __init__(self, masker: Masker | None = None) -> None:
        super().__init__(TEXT_FORMAT)
        self.masker = masker or Masker()

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = self.masker.text(super().formatMessage(record))
        fields = extras(record)
        if not fields:
            return line
        rendered = " ".join(f"{k}={_short(self.masker.value(k, v))}" for k, v in fields.items())
        return f"{line} [{rendered}]"

    def formatException(self, ei: Any) -> str:
        return self.masker.text(super().formatException(ei))


def _short(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def formatter(fmt: str, masker: Masker) -> logging.Formatter:
    fmt = (fmt or "text").strip().lower()
    if fmt == "json":
        return JsonFormatter(masker)
    if fmt == "text":
        return TextFormatter(masker)
    raise LogSetupError(f"unknown log format {fmt!r} (expected {' or '.join(FORMATS)})")


def configure(fmt: str = "text", level: str = "info", *, env: Mapping[str, str] | None = None,
              stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record of the process to ``stream`` (stderr) in ``fmt``; returns the handler.

    Replaces the root handlers rather than adding one, so calling it twice (a
    test, an embedding program) never doubles every line.
    """
    env = os.environ if env is None else env
    numeric = logging.getLevelName(level.strip().upper())
    if not isinstance(numeric, int):
        raise LogSetupError(f"unknown log level {level!r} (expected debug, info, warning, error)")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(fmt, Masker.from_env(env)))
    handler.set_name("syncbus")
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.captureWarnings(True)  # Python warnings as log records too, not stray stderr text
    for name in CHATTY:
        logging.getLogger(name).setLevel(max(logging.WARNING, numeric))
    adopt_library_loggers()
    return handler


def banner_line(text: str, fmt: str) -> str:
    """The start-up line scripts wait for: as is, or as a JSON log object, so a JSON log stays all JSON."""
    if (fmt or "text").strip().lower() != "json":
        return text
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps({"time": now, "level": "INFO", "logger": "syncbus", "message": text}, ensure_ascii=False)


def adopt_library_loggers(names: Iterable[str] = UVICORN) -> None:
    """Route uvicorn's loggers to the root handler: drop their own handlers, let records propagate.

    uvicorn installs its handlers when its ``Config`` is built, which is after
    :func:`configure`; the server calls this again once that happened. Only
    when :func:`configure` installed the root handler: a program that embeds
    syncbus with a logging setup of its own keeps it.
    """
    if not any(h.get_name() == "syncbus" for h in logging.getLogger().handlers):
        return
    for name in names:
        logger = logging.getLogger(name)
        if not logger.handlers:
            # No handler and no propagation is uvicorn switching its access log off (access_log=False);
            # propagating would switch it on: uvicorn asks ``hasHandlers()`` per connection.
            continue
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True


__all__ = ["FORMATS", "JsonFormatter", "LogSetupError", "Masker", "TextFormatter", "adopt_library_loggers",
           "banner_line", "configure"]
