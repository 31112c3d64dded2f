"""API keys for the HTTP service (Ray-free).

When keys are configured (``Settings.api_keys`` / ``AETHERIS_API_KEYS``), every
``/v1/*`` request must carry one as ``Authorization: Bearer <key>`` or
``X-API-Key: <key>``.  Keys are compared in constant time (`hmac.compare_digest`,
against every configured key, so the time does not reveal which one nearly matched).
``/healthz``, the web page, ``/docs`` and ``/openapi.json`` stay open: they hold no data.
"""

from __future__ import annotations

import hmac
from typing import Mapping, Sequence

#: Paths that never need a key (exact match, or prefix for the static files).
OPEN_PATHS = frozenset({"/", "/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc", "/favicon.ico"})


class KeyChecker:
    """Holds the configured keys; `allowed` says whether request headers carry a valid one.

    >>> KeyChecker([]).allowed({})
    True
    >>> k = KeyChecker(["s3cret"])
    >>> k.allowed({"authorization": "Bearer s3cret"}), k.allowed({"x-api-key": "s3cret"}), k.allowed({"x-api-key": "nope"})
    (True, True, False)
    """

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = [k.encode() for k in keys if k]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    @staticmethod
    def presented(headers: Mapping[str, str]) -> str | None:
        """The key a request presents (Bearer token first, then ``X-API-Key``), or None."""
        auth = headers.get("authorization")
        if auth:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        key = headers.get("x-api-key")
        return key.strip() if key and key.strip() else None

    def allowed(self, headers: Mapping[str, str]) -> bool:
        if not self._keys:
            return True
        got = self.presented(headers)
        if got is None:
            return False
        raw = got.encode()
        ok = False
        for k in self._keys:
            ok |= hmac.compare_digest(raw, k)
        return ok

    @staticmethod
    def is_open(path: str) -> bool:
        return path in OPEN_PATHS or path.startswith("/static/")
