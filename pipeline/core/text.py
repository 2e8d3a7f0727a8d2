"""Text shown to users: errors squeezed onto one line, and URLs with their credentials masked."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#]+@")
_SECRET_QUERY = re.compile(r"(?i)([?&;](?:password|passwd|pass|pwd|passphrase|token|key|secret|auth)=)[^&;#\s]*")


def one_line(error: BaseException) -> str:
    """An FFmpeg or OS error as one short line: its reason without errno or file name, whitespace collapsed."""
    reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return " ".join(str(reason).split())


def mask_credentials(text: str) -> str:
    """`text` with the user:password of every URL in it, and secret query values, replaced by `***`."""
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\1***@", text))
