"""Keeping secrets out of what salesplan prints: database URLs are shown with their password masked.

``mask_url`` masks one URL; ``redact`` masks every ``scheme://user:password@`` and libpq
``password=…`` it finds in a text (an error message, a traceback, a log line);
``RedactingFilter`` applies ``redact`` to every log record a handler emits, tracebacks included.
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Final

MASK: Final = "***"

_URL_PASSWORD: Final = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/?#@\s'\"]*):(?P<password>[^@/\s'\"]*)@")
_DSN_PASSWORD: Final = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<password>'[^']*'|\"[^\"]*\"|[^\s,;&]+)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every password of a URL or a libpq DSN in it replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _DSN_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)


def mask_url(url: str) -> str:
    """The URL to show: its password (if any) replaced by ``***``, everything else as it is."""
    return redact(url)


class RedactingFilter(logging.Filter):
    """Masks passwords in a record's message and traceback before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Arguments are redacted one by one, not merged into the message: some formatters read them
        # (uvicorn's access log formats its own from record.args).
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else _redacted(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(a) if isinstance(a, str) else _redacted(a) for k, a in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info))).rstrip("\n")
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def _redacted(value: object) -> object:
    """A non-string argument, as a redacted string if its text would carry a password, else itself."""
    text = str(value)
    redacted = redact(text)
    return value if redacted == text else redacted


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add a ``RedactingFilter`` to every handler of ``logger`` (default: the root logger)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
