"""Per-client limit on posted outcomes (Ray-free): a token bucket per API key, else per client address.

Issue 14, item 4.  Every new outcome costs the next forecast of its asset one raw
score (`aetheris_ray.pairs`: tens of milliseconds on a loaded 2-core machine when its
refit period's fit is not cached yet), so the service bounds how many one client can
post: `MAX_OUTCOMES_PER_REQUEST` per ``POST /v1/outcomes`` (422 naming ``outcomes``)
and `OUTCOMES_PER_MINUTE` per client per ingress replica (429 with ``Retry-After``).
The bucket holds a minute's worth and refills continuously, so a client may post one
full request and then about one outcome per `60 / OUTCOMES_PER_MINUTE` seconds.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from typing import Callable

from aetheris_ray.outcomes import MAX_OUTCOMES_PER_REQUEST

__all__ = ["MAX_OUTCOMES_PER_REQUEST", "OUTCOMES_PER_MINUTE", "OutcomeRateLimit", "client_id"]

#: Outcomes one client (API key, else address) may post per minute, per ingress replica.
OUTCOMES_PER_MINUTE = 1_000


def client_id(api_key: str | None, host: str | None) -> str:
    """Who is limited: a hash of the API key presented (never the key itself), else the client address."""
    if api_key:
        return "key:" + hashlib.sha256(api_key.encode()).hexdigest()[:16]
    return "addr:" + (host or "unknown")


class OutcomeRateLimit:
    """Token buckets of ``per_minute`` outcomes per client, refilled continuously.

    >>> t = [0.0]
    >>> lim = OutcomeRateLimit(per_minute=60, clock=lambda: t[0])
    >>> lim.take("a", 60), lim.take("a", 1), lim.take("b", 1)
    (None, 1, None)
    >>> t[0] = 30.0
    >>> lim.take("a", 30), lim.take("a", 1)
    (None, 1)
    """

    def __init__(self, per_minute: int = OUTCOMES_PER_MINUTE, *, clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute, self.clients, self.clock = int(per_minute), int(clients), clock
        self._b: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, client: str, n: int) -> int | None:
        """Take ``n`` outcomes from ``client``'s bucket: None when allowed, else the seconds to wait (>= 1).

        A refused request takes nothing.  ``n`` above the bucket's size can never pass:
        the wait returned is the time to refill a full bucket.
        """
        rate = self.per_minute / 60.0
        now = self.clock()
        with self._lock:
            tokens, at = self._b.get(client, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - at) * rate)
            if n <= tokens:
                self._b[client] = (tokens - n, now)
                self._b.move_to_end(client)
                while len(self._b) > self.clients:  # forget the least recent (a full bucket again)
                    self._b.popitem(last=False)
                return None
            self._b[client] = (tokens, now)
            self._b.move_to_end(client)
            need = min(float(n), float(self.per_minute)) - tokens
            return max(1, math.ceil(need / rate))
