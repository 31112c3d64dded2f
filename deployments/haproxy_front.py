"""The hardened HTTP front: Serve's generated HAProxy config, tightened before HAProxy reads it.

Serve (``RAY_SERVE_ENABLE_HA_PROXY=1``) renders its HAProxy config from a fixed template
and runs the binary named by ``RAY_SERVE_HAPROXY_BINARY_PATH``.  That template opens the
admin socket to every local user (``mode 666 level admin``: anyone on the host could
``set server ... addr`` and redirect traffic, keys included), binds the stats page and the
Prometheus exporter on every interface, sets no ``timeout http-request`` and a 3,600 s
client timeout, and has no per-source limit: 4,200 connections with unfinished headers
stopped the service.  `aetheris_ray.distributed.serving.use_serve_env` points
``RAY_SERVE_HAPROXY_BINARY_PATH`` at a two-line shell script that runs this file with the
real binary first::

    python deployments/haproxy_front.py /path/to/haproxy -db -f /dir/haproxy.cfg ...

It rewrites the config in place (same path: Serve finds its HAProxy processes by that
path in their command line), under the lock Serve writes it with, then ``exec``s the real
binary with the arguments unchanged.  `harden`:

* admin socket ``mode 600`` (owner only);
* stats page and Prometheus exporter bound to 127.0.0.1;
* ``timeout http-request`` (whole request head, and body wait) `HTTP_REQUEST_S`,
  ``timeout client`` `CLIENT_S`, ``timeout http-keep-alive`` `KEEP_ALIVE_S`;
* at most `CONN_PER_SOURCE` concurrent connections per client address on the HTTP
  frontend (a stick table on ``src``; more are refused at accept);
* ``retry-on conn-failure empty-response``: a request whose ingress replica died before
  answering (kill -9) is resent (``option redispatch``: to another replica, or Serve's
  fallback proxy, which waits for the replacement) instead of hanging or failing.  Every
  POST route is safe to repeat: forecasts are pure given the seed, outcomes are keyed;
  ``retries`` `RETRIES`: HAProxy's default, 3, is what it takes Serve's ``observe layer4
  error-limit 3`` to mark the dead replica down, so a request could spend all three on the
  dead replica and get a 503 with an empty body; with 6 the later ones go to the fallback;
  ``http-request wait-for-body`` for a declared body of at most `HELD_BODY` bytes: the whole
  request is held before a replica is picked, so it can be resent when the replica dies
  mid-request (clients send head and body in two writes; without it HAProxy had streamed
  the body and answered 502).  Larger or chunked bodies stream on to the ingress, which
  enforces its body limit while reading (a body held whole would make a declared 50 MB
  that never comes an HAProxy 408 page instead of the ingress's 413);
* ``maxconn`` `MAXCONN`, or what the file-descriptor limit allows (`fd_maxconn`), if
  less, but not under Serve's own (4,096).  With 4,096, 4,500 idle connections queued
  every request behind them until the header timeout dropped them: 10.5 s for a 10 ms
  forecast, and about 3 s more while HAProxy closed them.  An idle connection with a
  partial head holds one 16 kB buffer: 10,000 of them about 160 MB.

Limits can be changed with ``AETHERIS_HAPROXY_<NAME>`` (e.g.
``AETHERIS_HAPROXY_CONN_PER_SOURCE=1000`` behind a load balancer that shows one address).
Where the template no longer has a line this expects (a Ray upgrade), `harden` raises and
HAProxy does not start: the front fails closed instead of running unhardened.

Standard library only: it runs before every HAProxy start and reload (about 40 ms).
"""

from __future__ import annotations

import fcntl
import os
import re
import sys

HTTP_REQUEST_S = 10
CLIENT_S = 60
KEEP_ALIVE_S = 10
CONN_PER_SOURCE = 256
MAXCONN = 10_000
HELD_BODY = 8_192  # bytes: bodies up to this are held whole (a forecast request is under 1 kB)
RETRIES = 6  # more than Serve's observe error-limit (3), so the last retries go to the fallback proxy
MARK = "# hardened by aetheris deployments/haproxy_front.py"

__all__ = ["harden", "limits", "main"]


def limits(env: dict[str, str] | None = None) -> dict[str, int]:
    """The limits in force: the defaults above, overridden by ``AETHERIS_HAPROXY_<NAME>`` (positive integers)."""
    env = os.environ if env is None else env
    out = {}
    for name, default in (("HTTP_REQUEST_S", HTTP_REQUEST_S), ("CLIENT_S", CLIENT_S),
                          ("KEEP_ALIVE_S", KEEP_ALIVE_S), ("CONN_PER_SOURCE", CONN_PER_SOURCE),
                          ("MAXCONN", MAXCONN)):
        raw = env.get(f"AETHERIS_HAPROXY_{name}", str(default))
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"AETHERIS_HAPROXY_{name} must be a positive integer, got {raw[:40]!r}")
        out[name] = int(raw)
    out["FD_MAXCONN"] = fd_maxconn()
    return out


def fd_maxconn() -> int:
    """The largest maxconn HAProxy 2.8 can start with under this process's hard RLIMIT_NOFILE.

    HAProxy needs about 2 descriptors a connection plus a fixed 5,036 (measured: maxconn
    10,000 asked for 25,036) and refuses to start ("Cannot raise FD limit") above the hard limit.
    """
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return MAXCONN if hard == resource.RLIM_INFINITY else (hard - 5_100) // 2


def harden(text: str, lim: dict[str, int] | None = None) -> str:
    """Serve's HAProxy config with the limits above; unchanged if already hardened.

    Raises ValueError naming what is missing when the config does not have the shape of
    Serve's template (admin socket, the two side listeners, the HTTP frontend, defaults).
    """
    if MARK in text:
        return text
    lim = limits() if lim is None else lim
    out: list[str] = []
    section = ""
    done: set[str] = set()
    for line in text.splitlines():
        s = line.strip()
        if line and not line[0].isspace():
            section = s
        if section == "global" and s.startswith("maxconn "):
            serves = int(s.split()[1])
            line = f"    maxconn {max(serves, min(lim['MAXCONN'], lim.get('FD_MAXCONN', lim['MAXCONN'])))}"
            done.add("maxconn")
        elif s.startswith("stats socket "):
            line, n = re.subn(r"\bmode \d+", "mode 600", line)
            if n != 1:
                raise ValueError(f"admin socket line without a mode: {s!r}")
            done.add("socket")
        elif s.startswith("bind ") and section in ("frontend prometheus", "listen stats"):
            port = s.split()[1].rsplit(":", 1)[-1]
            if not port.isdigit():
                raise ValueError(f"{section}: cannot read the port of {s!r}")
            line = line[: len(line) - len(line.lstrip())] + f"bind 127.0.0.1:{port}"
            done.add(section)
        elif section == "defaults" and (s.split()[:2] in (["timeout", "client"], ["timeout", "http-request"],
                                                          ["timeout", "http-keep-alive"]) or s.split()[:1] == ["retries"]):
            continue  # replaced below
        elif section == "defaults" and s == "retry-on conn-failure":
            line = line.replace("conn-failure", "conn-failure empty-response")
            out += [line, f"    retries {RETRIES}"]
            done.add("retry-on")
            continue
        out.append(line)
        if s == "defaults":
            out += [f"    timeout http-request {lim['HTTP_REQUEST_S']}s",
                    f"    timeout client {lim['CLIENT_S']}s",
                    f"    timeout http-keep-alive {lim['KEEP_ALIVE_S']}s"]
            done.add("defaults")
        elif section == "frontend http_frontend" and s.startswith("bind ") and "http_frontend" not in done:
            out += ["    # at most CONN_PER_SOURCE concurrent connections per client address",
                    "    stick-table type ip size 100k expire 60s store conn_cur",
                    "    tcp-request connection track-sc0 src",
                    f"    tcp-request connection reject if {{ sc0_conn_cur gt {lim['CONN_PER_SOURCE']} }}",
                    "    # hold a small body whole before picking a replica: it can then be resent if the replica dies",
                    (f"    http-request wait-for-body time {lim['HTTP_REQUEST_S']}s if "
                     f"{{ req.hdr_val(content-length) le {HELD_BODY} }}")]
            done.add("http_frontend")
    missing = {"socket", "maxconn", "retry-on", "frontend prometheus", "listen stats", "defaults",
               "http_frontend"} - done
    if missing:
        raise ValueError(f"not Serve's HAProxy template (missing: {', '.join(sorted(missing))}); refusing to run "
                         "an unhardened front")
    return "\n".join(out + [MARK, ""])


def main(argv: list[str]) -> None:
    """``haproxy_front.py REAL_BINARY ARGS...``: harden the ``-f`` config, then exec the real binary."""
    if len(argv) < 2:
        raise SystemExit("usage: haproxy_front.py HAPROXY_BINARY [haproxy args]")
    real, args = argv[1], argv[2:]
    if "-f" in args:
        path = args[args.index("-f") + 1]
        try:
            with open(path + ".lock", "a") as lock:  # the lock Serve writes the config under
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                new = harden(text)
                if new != text:
                    with open(path, "w", encoding="utf-8") as f:
                        f.write(new)
        except (OSError, ValueError) as e:
            raise SystemExit(f"aetheris haproxy_front: {path}: {e}") from None
    os.execv(real, [real, *args])


if __name__ == "__main__":
    main(sys.argv)
