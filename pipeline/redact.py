"""Credentials out of text: the one redaction every log line, summary and error message uses,
and the test for credentials a URI must not carry."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# scheme://USERINFO@host → scheme://***@host, anywhere in a text (a URI, an error message
# quoting one, a traceback line). The whole user-info part goes: a user name can be the
# secret itself (https://TOKEN@host, GitHub's TOKEN:x-oauth-basic@).
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s'\"]+@")
# Query parameters that may carry secrets (?token=…, &password=…, X-Amz-Signature=…): value →
# ***. Broader than what a spec refuses (pipeline.spec.sections): redacting too much is harmless.
_SECRET_QUERY = re.compile(
    r"(?P<head>[?&;][^=&#;\s'\"/]*(?:pass|secret|token|key|credential|sig|auth)[^=&#;\s'\"/]*=)[^&#;\s'\"]+",
    re.I,
)

# What to say instead of credentials in an MLflow server's URI (MLflow's own variables).
HTTP_CREDENTIALS = (
    "an MLflow server's credentials come from the environment: MLFLOW_TRACKING_USERNAME and "
    "MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN"
)


def redact(text: str | None) -> str | None:
    """`text` with every URI's user-info part and secret query values replaced by ***;
    None stays None."""
    if not text:
        return text
    return _SECRET_QUERY.sub(r"\g<head>***", _USERINFO.sub(r"\g<head>***@", text))


def userinfo(uri: str) -> str:
    """The user-info part of `uri` (`user:password`, `TOKEN`), '' when it has none."""
    try:
        return urlsplit(uri).netloc.rpartition("@")[0]
    except ValueError:
        return ""

