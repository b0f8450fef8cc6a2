"""Text from outside made safe to store and print.

A provider's failure reason, an error message, a ledger line someone edited: any of it may
carry terminal escapes (a retitled window, a cleared screen), bidi overrides that make a line
read differently than it is, or megabytes. ``clean_text`` is applied before such text is
stored or printed; ``redact_url`` before a URL that may carry a password is shown.
A leaf module: storage, provider and cli all use it.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["MAX_TEXT", "clean_text", "redact_url"]

#: the most of one outside text (a failure reason, an error message) batchgen keeps
MAX_TEXT = 2000

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def clean_text(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` without control characters (escape sequences lose their ESC, so a terminal
    shows them as letters), bidi overrides, and cut to ``limit`` characters: for every text
    that comes from outside (the provider, a ledger) before it is stored or printed."""
    if len(text) > limit:
        text = text[:limit] + f"... ({len(text) - limit:,} more characters)"
    return _CONTROL.sub("", text.replace("\t", " ").replace("\n", " ").replace("\r", " "))


def redact_url(url: str) -> str:
    """``url`` with any user name and password replaced by ``***`` (safe to print)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc="***@" + host).geturl()
