"""Process logging: one handler, set up once at start, that writes JSON lines or readable text.

`configure_logging` is called by the command line before any role starts. Every record goes
through two filters on that handler, whatever its format:

- **context**: the fields bound with `log_context` (contextvars, so an asyncio task inherits its
  creator's fields) are put on the record: ``role`` (``up``, ``process``, ``sync``, ``api``),
  and where the code knows them ``partition``, ``segment``, ``provider`` and ``profile``. A
  call's own ``extra=`` wins over the bound value.
- **redaction**: a safety net behind the real rule (secrets are never formatted into a log
  call). Registered secret values (the API token, the secret key, decrypted provider
  credentials) and recognisable secret shapes (``Bearer``/``Basic`` credentials, the password
  of a URL such as ``redis://:pw@host``, ``token=``/``api_key=``-like pairs, Mailchimp API
  keys) are replaced by ``[redacted]`` in the message, the exception text and string fields.

Formats (``SEGSTREAM_LOG_FORMAT``): ``json`` writes one object per line with ``ts`` (RFC 3339,
UTC, milliseconds), ``level``, ``logger``, ``message``, then the context fields and any other
``extra=`` field, and ``exception`` when there is one. ``text`` writes readable lines (Rich on a
terminal, so they print above `up --demo`'s live view; plain otherwise) with the fields as
``key=value``. ``auto`` is text on a terminal and JSON otherwise. Logs go to stderr; stdout stays
for command output (`lag --json`, `schema`).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, TextIO

from pydantic import SecretStr
from rich.console import Console
from rich.logging import RichHandler

CONTEXT_FIELDS: Final = ("role", "partition", "segment", "provider", "profile")
"""The context fields, in the order they are written."""

REDACTED: Final = "[redacted]"

QUIET_LOGGERS: Final = {"aiokafka": logging.WARNING, "httpx": logging.WARNING,
                        "httpcore": logging.WARNING, "uvicorn.access": logging.WARNING}
"""Libraries kept at WARNING at every level: httpx logs request URLs at INFO (query strings may
carry tokens), aiokafka logs every reconnect at INFO, uvicorn one line per request."""

_NOTHING: Final[Mapping[str, object]] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, object]] = contextvars.ContextVar(
    "segstream_log_context", default=_NOTHING)

# Attributes every LogRecord has; anything else on a record came from `extra=` or a filter.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Bind context fields for the block, and for every task created inside it."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: object) -> None:
    """Bind context fields for the rest of the current task (and the tasks it creates)."""
    _context.set({**_context.get(), **fields})


def bound() -> Mapping[str, object]:
    """The context fields bound here."""
    return _context.get()


class Redactor:
    """Replaces secrets in text: registered values, and shapes that are secrets wherever seen."""

    PATTERNS: Final = (
        # Authorization header values: `Bearer abc`, `Basic dXNlcjpwdw==`.
        (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{4,}"), rf"\1\2{REDACTED}"),
        # The password of a URL: redis://:pw@host, https://user:pw@host.
        (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@"), rf"\1{REDACTED}@"),
        # key=value or "key": "value" pairs whose key names a secret (query strings, dicts).
        (re.compile(r"(?i)\b((?:api[_-]?(?:key|token)|access[_-]?token|secret(?:[_-]?key)?|"
                    r"password|passwd|token|authorization)[\"']?\s*[=:]\s*[\"']?)"
                    r"(?!\[redacted\])[^\s\"'&,;}]+"), rf"\1{REDACTED}"),
        # Mailchimp API keys: 32 hex digits, a dash, the data centre.
        (re.compile(r"\b[0-9a-f]{32}-[a-z]{2,4}[0-9]{1,3}\b"), REDACTED),
    )
    MIN_LENGTH: Final = 6
    """Shorter values are not registered: replacing them would blank ordinary words."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def register(self, *values: object) -> None:
        """Remember secret values (strings; anything else and short strings are ignored)."""
        for value in values:
            if isinstance(value, str) and len(value) >= self.MIN_LENGTH:
                self._values.add(value)

    def redact(self, text: str) -> str:
        for value in sorted(self._values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, REDACTED)
        for pattern, replacement in self.PATTERNS:
            text = pattern.sub(replacement, text)
        return text


secrets: Final = Redactor()
"""The process's redactor: `register_secrets` adds to it, every handler's filter uses it."""


def register_secrets(*values: object) -> None:
    """Values that must never appear in a log line (the API token, credentials...)."""
    secrets.register(*values)


class ContextFilter(logging.Filter):
    """Puts the bound context fields on each record (a call's own `extra=` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class RedactFilter(logging.Filter):
    """Formats the message and exception once, redacted, so no formatter sees the originals."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redact = self.redactor.redact
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.exc_info = None  # formatters use exc_text; Rich would render the raw exception
        for name, value in _extras(record).items():
            if isinstance(value, str):
                setattr(record, name, redact(value))
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """Context fields first, in their order, then other extras by name."""
    extras = _extras(record)
    ordered = {k: extras.pop(k) for k in CONTEXT_FIELDS if extras.get(k) is not None}
    return {**ordered, **dict(sorted(extras.items()))}


def rfc3339(created: float) -> str:
    """A record's time as RFC 3339 UTC with milliseconds: 2026-12-04T15:51:54.123Z."""
    moment = datetime.fromtimestamp(created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": rfc3339(record.created), "level": record.levelname, "logger": record.name,
            "message": record.getMessage(), **_fields(record),
        }
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`logger: message  key=value ...`, and the exception below it."""

    def __init__(self, timestamps: bool) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s" if timestamps
                         else "%(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        return super().formatMessage(record) + (f"  {fields}" if fields else "")


def resolve_format(name: str, stream: TextIO) -> str:
    """`text` or `json` for a configured format (`auto`: text on a terminal)."""
    if name == "auto":
        return "text" if stream.isatty() else "json"
    return name


def build_handler(
    log_format: str, stream: TextIO | None = None, console: Console | None = None,
    redactor: Redactor = secrets,
) -> logging.Handler:
    """A handler writing `log_format` (`text`, `json`, `auto`) to `stream` (stderr), with the
    context and redaction filters; Rich text through `console` when it is a terminal's."""
    stream = stream or sys.stderr
    handler: logging.Handler
    if resolve_format(log_format, stream) == "json":
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter())
    elif console is not None and console.is_terminal:
        handler = RichHandler(console=console, show_path=False)  # prints above the live view
        handler.setFormatter(TextFormatter(timestamps=False))
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(TextFormatter(timestamps=True))
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactFilter(redactor))
    return handler


def configure_logging(
    log_format: str, level: str, console: Console | None = None, stream: TextIO | None = None,
) -> logging.Handler:
    """Once at process start: the root logger writes through one `build_handler` handler,
    records from `level` up; the libraries of `QUIET_LOGGERS` from WARNING up."""
    handler = build_handler(log_format, stream, console)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name, quiet in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(quiet)
    return handler


def register_settings_secrets(settings: object) -> None:
    """Register every `SecretStr` field of a settings object (token, keys, passwords)."""
    for value in vars(settings).values():
        if isinstance(value, SecretStr):
            register_secrets(value.get_secret_value())


_SECRET_KEY_WORDS: Final = ("key", "token", "secret", "password")


def register_credentials(credentials: Mapping[str, object]) -> None:
    """Register a provider profile's secret values (`api_key`, `access_token`, `api_token`);
    the others (`api_url`, `dc`) say where, not who, and stay readable."""
    register_secrets(*(value for name, value in credentials.items()
                       if any(word in name.lower() for word in _SECRET_KEY_WORDS)))
