"""The HAProxy front's limits for Serve's Python proxy, where it is the HTTP front (issue 14 item 2).

Serve's Python proxy runs uvicorn, which has no timeout for a request head (its
keep-alive timer starts only after a response) and no limit per client address: a few
thousand connections with unfinished heads hold it forever.  Where HAProxy is not the
front (``aetheris serve --proxy python``, or no HAProxy binary),
`aetheris_ray.distributed.serving.use_serve_env` sets
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=deployments.python_front.guard``: Serve calls
`guard` in its proxy actor before it starts uvicorn, and `guard` makes uvicorn's
``auto`` HTTP protocol `GuardedProtocol`, uvicorn's own httptools protocol with:

* a head timeout (``AETHERIS_HAPROXY_HTTP_REQUEST_S``, 10 s, the same setting as
  HAProxy's ``timeout http-request``): a connection whose request head is not complete
  that long after it opened, or after its last response, is closed; answered 408 with
  the contract's JSON error body first where part of a head had arrived (an idle
  keep-alive connection is closed silently, as HAProxy's ``timeout http-keep-alive`` does);
* at most ``AETHERIS_HAPROXY_CONN_PER_SOURCE`` (256) open connections per client
  address: more are closed at once, as HAProxy's ``tcp-request connection reject`` does.

Not behind HAProxy (whose connections all come from 127.0.0.1): the fallback proxy
HAProxy uses keeps uvicorn's defaults.  Fails closed: where uvicorn's httptools protocol
is missing or lacks the methods this wraps, `guard` raises and the proxy does not start.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import ClassVar

from deployments.haproxy_front import limits

__all__ = ["guard"]  # and GuardedProtocol, built on first use

#: The answer to a head that did not complete in time (the contract's error body).
TIMEOUT_BODY = json.dumps({"error": "request_timeout", "field": None,
                           "detail": "the request head did not arrive in time"}).encode()
TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\nconnection: close\r\n\r\n" % len(TIMEOUT_BODY)) + TIMEOUT_BODY
WRAPPED = ("connection_made", "connection_lost", "data_received", "on_headers_complete", "on_response_complete")


def _protocol_class():
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    missing = [m for m in WRAPPED if not callable(getattr(HttpToolsProtocol, m, None))]
    if missing:
        raise RuntimeError(f"uvicorn's HttpToolsProtocol lacks {', '.join(missing)}; refusing an unguarded front")

    class GuardedProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with a head timeout and a per-address connection limit."""

        open_per_source: ClassVar[Counter] = Counter()
        head_timeout_s = 10.0
        per_source = 256

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._source = self.client[0] if self.client else ""
            self._head_timer = None
            self._head_bytes = False
            GuardedProtocol.open_per_source[self._source] += 1
            if GuardedProtocol.open_per_source[self._source] > self.per_source:
                transport.abort()  # as HAProxy's reject: no answer
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._head_bytes = False
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

        def data_received(self, data: bytes) -> None:
            self._head_bytes = True
            super().data_received(data)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
                if self._head_bytes:  # part of a head: say why (an idle connection is closed silently)
                    self.transport.write(TIMEOUT_RESPONSE)
                self.transport.close()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next head, or an idle keep-alive connection, gets the same time

        def connection_lost(self, exc) -> None:
            self._disarm()
            n = GuardedProtocol.open_per_source[self._source] - 1
            if n > 0:
                GuardedProtocol.open_per_source[self._source] = n
            else:
                GuardedProtocol.open_per_source.pop(self._source, None)
            super().connection_lost(exc)

    return GuardedProtocol


def __getattr__(name: str):  # GuardedProtocol is built on first use: uvicorn is imported only then
    if name == "GuardedProtocol":
        cls = _protocol_class()
        globals()["GuardedProtocol"] = cls
        return cls
    raise AttributeError(name)


def guard() -> list:
    """Serve's proxy callback: uvicorn's ``auto`` HTTP protocol becomes `GuardedProtocol`; no middlewares."""
    import uvicorn.config

    lim = limits()
    cls = __getattr__("GuardedProtocol")
    cls.head_timeout_s = float(lim["HTTP_REQUEST_S"])
    cls.per_source = int(lim["CONN_PER_SOURCE"])
    uvicorn.config.HTTP_PROTOCOLS["auto"] = "deployments.python_front:GuardedProtocol"
    return []
