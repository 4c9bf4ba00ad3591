"""Signed, expiring attachment URLs: minted for GraphQL, checked by the download route.

A URL is for one viewer (``u``, signed), whose access the route checks on each read.
Expiries are rounded to half the lifetime, so a viewer's URL (and client caches) stay
the same for a while: a URL lives between half and all of ATTACHMENT_URL_SECONDS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Callable
from urllib.parse import quote, urlencode

# The one spelling expiry() produces: ASCII digits, no sign, no leading zero. str.isdigit()
# would also take other scripts' digits ("١٢"), another spelling of the same signed URL.
_EXPIRES = re.compile(r"[1-9][0-9]{0,11}")
# Signed in place of a file name for a preview's URL: no file name has a newline.
PREVIEW = "\npreview"


class UrlSigner:
    def __init__(self, secret: str, seconds: int, clock: Callable[[], float] = time.time) -> None:
        # A key of its own, so the secret could sign other things without confusion.
        self._key = hmac.new(
            secret.encode(), b"threadline attachment urls v1", hashlib.sha256
        ).digest()
        self.seconds = seconds
        self.step = max(1, seconds // 2)
        self.clock = clock

    def expiry(self) -> int:
        now = int(self.clock())
        return now - now % self.step + self.seconds

    def signature(
        self, attachment_id: uuid.UUID | str, filename: str, expires: int, viewer: str
    ) -> str:
        message = f"{attachment_id}\n{filename}\n{expires}\n{viewer}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def url(
        self,
        attachment_id: uuid.UUID,
        filename: str,
        origin: str,
        viewer: uuid.UUID,
        *,
        preview: bool = False,
    ) -> str:
        """The file's URL, or with ``preview`` its preview's (signed as PREVIEW)."""
        if preview:
            signed, path = PREVIEW, f"previews/{attachment_id}"
        else:
            signed, path = filename, f"attachments/{attachment_id}/{quote(filename, safe='')}"
        expires = self.expiry()
        signature = self.signature(attachment_id, signed, expires, str(viewer))
        query = urlencode({"exp": expires, "sig": signature, "u": str(viewer)})
        return f"{origin.rstrip('/')}/{path}?{query}"

    def check(
        self, attachment_id: str, filename: str | None, expires: str, signature: str, viewer: str
    ) -> int | None:
        """Seconds the URL has left when signature and expiry hold, else None.
        ``filename`` is the path's (None: the preview's URL)."""
        if filename is None:
            filename = PREVIEW
        elif "\n" in filename:
            return None  # "\npreview" from a path would take a preview's signature
        if _EXPIRES.fullmatch(expires) is None:
            return None
        left = int(expires) - int(self.clock())
        if left <= 0:
            return None
        expected = self.signature(attachment_id, filename, int(expires), viewer)
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            return None
        return left
