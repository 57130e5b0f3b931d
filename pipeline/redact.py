"""Credentials out of text: the one redaction every log line, summary and error message uses."""

from __future__ import annotations

import re

# scheme://user:password@host → scheme://user:***@host, anywhere in a text (a URI, an error
# message quoting one, a traceback line).
_CREDENTIALS = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/@:\s'\"]*):[^@/\s'\"]+@")


def redact(text: str | None) -> str | None:
    """`text` with the password of every URI in it replaced by ***; None stays None."""
    if not text:
        return text
    return _CREDENTIALS.sub(r"\g<head>:***@", text)
