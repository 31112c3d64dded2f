"""Port audit of ``aetheris serve`` (issue 14): every listening socket of its process tree, and what protects it.

The service runs as a user runs it (``aetheris serve --synthetic --address local``, API
keys set, Ray's token auth on by default).  Then:

* every TCP socket that listens on a non-loopback address must be a Ray gRPC server that
  refuses a call without Ray's token (UNAUTHENTICATED) and answers no plain HTTP request;
  everything else listens on 127.0.0.1 / ::1;
* a Ray job submission (the dashboard agent's job API, which runs any command it is sent)
  to the machine's external address is refused, and on 127.0.0.1 without the token gets 401;
* HAProxy's admin socket is owner-only, its stats and metrics on 127.0.0.1;
* ``/v1/*`` without a key is 401.

The table it prints (``-s``) is the one in docs/security.md.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import stat
import time
from pathlib import Path

import pytest
import requests

from deployments.haproxy_front import MARK

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "audit-key-0123456789"
#: Methods of the gRPC services Ray runs (GCS, raylet, core worker, Serve replica); a server
#: that checks Ray's token answers UNAUTHENTICATED to the one it serves, UNIMPLEMENTED to the rest.
RAY_GRPC_METHODS = ("/ray.rpc.NodeInfoGcsService/GetAllNodeInfo", "/ray.rpc.NodeManagerService/GetNodeStats",
                    "/ray.rpc.CoreWorkerService/NumPendingTasks", "/ray.serve.ASGIService/HandleRequest")


def is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def external_address() -> str | None:
    """One non-loopback IPv4 address of this machine (where a remote attacker would connect), or None."""
    import ray  # noqa: F401  (ray ships psutil in its third-party path)
    import psutil

    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not ipaddress.ip_address(a.address).is_loopback:
                return a.address
    return None


def listening(root_pid: int) -> list[tuple[str, int, int, str]]:
    """(address, port, pid, process name) of every listening TCP socket of ``root_pid`` and its descendants."""
    import ray  # noqa: F401
    import psutil

    root = psutil.Process(root_pid)
    procs = {p.pid: p for p in [root, *root.children(recursive=True)]}
    out = []
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN and c.pid in procs:
            try:
                name = procs[c.pid].name()
                cmd = " ".join(procs[c.pid].cmdline()[:1])
            except psutil.Error:
                name = cmd = "?"
            out.append((c.laddr.ip, c.laddr.port, c.pid, name if name.startswith("ray::") else Path(cmd).name))
    return sorted(set(out), key=lambda r: (r[3], r[1]))


def http_probe(host: str, port: int) -> str:
    """What a plain HTTP/1.1 request gets: ``HTTP <status>``, or how the connection failed."""
    try:
        r = requests.post(f"http://{host}:{port}/api/job_agent/jobs/", json={"entrypoint": "id"}, timeout=3)
        return f"HTTP {r.status_code}"
    except requests.RequestException as e:
        return type(e).__name__


def grpc_probe(host: str, port: int) -> set[str]:
    """gRPC status codes of `RAY_GRPC_METHODS` called without Ray's token."""
    import grpc

    codes = set()
    with grpc.insecure_channel(f"{host}:{port}") as ch:
        for m in RAY_GRPC_METHODS:
            try:
                ch.unary_unary(m, request_serializer=lambda b: b, response_deserializer=lambda b: b)(b"", timeout=5)
                codes.add("OK")
            except grpc.RpcError as e:
                codes.add(e.code().name)
    return codes


@pytest.fixture(scope="module")
def service(tmp_path_factory, aetheris_serve):
    """``aetheris serve --synthetic --address local`` with an API key; yields (process, url)."""
    home = tmp_path_factory.mktemp("audit_home")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with aetheris_serve(["--synthetic", "--port", str(port), "--num-cpus", "1", "--address", "local"],
                        {"AETHERIS_HOME": str(home), "AETHERIS_API_KEYS": f'["{KEY}"]'}) as (proc, url, _):  # auth: default
        yield proc, url


def test_no_unauthenticated_endpoint_off_loopback(service):
    proc, url = service
    ext = external_address()
    socks = listening(proc.pid)
    names = {name for *_, name in socks}
    assert "haproxy" in names and any("Ingress" in n for n in names), names  # the audit sees the whole tree
    rows, exposed = [], []
    for ip, port, _pid, name in socks:
        if is_loopback(ip):
            rows.append((f"{ip}:{port}", name, "loopback only"))
            continue
        # listens off loopback: reachable from the network, so it must demand Ray's token
        codes = grpc_probe(ext or "127.0.0.1", port)
        http = http_probe(ext or "127.0.0.1", port)
        ok = "UNAUTHENTICATED" in codes and "OK" not in codes and not http.startswith("HTTP")
        rows.append((f"{ip}:{port}", name, f"gRPC without token: {'/'.join(sorted(codes))}; HTTP/1.1: {http}"))
        if not ok:
            exposed.append(rows[-1])
    print("\nport audit of `aetheris serve` (external address %s)" % ext)
    for r in rows:
        print("  %-28s %-40s %s" % r)
    assert not exposed, exposed
    # Ray's own HTTP servers (job API, agents, metrics exporters) and HAProxy's side ports: loopback only
    for ip, port, _pid, name in socks:
        if name in ("haproxy", "ray::DashboardAgent", "ray::RuntimeEnvAgent") or "python" in name:
            assert is_loopback(ip), (ip, port, name)


JOB = {"entrypoint": "touch /tmp/aetheris-audit-pwned", "submission_id": "audit"}


def test_job_submission_is_refused(service):
    """The dashboard agent's job API ran ``id`` as root with auth off (issue 14); now no agent port takes a job."""
    proc, _url = service
    agent_ports = [port for ip, port, _pid, name in listening(proc.pid) if name == "ray::DashboardAgent"]
    assert agent_ports
    ext = external_address()
    answers = {}
    for port in agent_ports:
        if ext is not None:  # nothing listens on the external address: refused before any HTTP
            with pytest.raises(requests.ConnectionError):
                requests.post(f"http://{ext}:{port}/api/job_agent/jobs/", json=JOB, timeout=5)
        try:
            r = requests.post(f"http://127.0.0.1:{port}/api/job_agent/jobs/", json=JOB, timeout=5)
            answers[port] = r.status_code
        except requests.RequestException as e:  # the agent's gRPC port
            answers[port] = type(e).__name__
    assert not any(isinstance(a, int) and a < 300 for a in answers.values()), answers
    assert not Path("/tmp/aetheris-audit-pwned").exists()


def test_job_api_demands_the_token(ray_session):
    """The session's local Ray (started as `aetheris serve` starts one): its job API is loopback-only and says 401."""
    port = ray_session._private.worker._global_node.dashboard_agent_listen_port
    if not port or port < 0:  # its default port was taken by another local Ray (this module's `service`)
        pytest.skip("the session Ray's job API did not start: its port was taken by another local Ray")
    ext = external_address()
    if ext is not None:
        with pytest.raises(requests.ConnectionError):
            requests.post(f"http://{ext}:{port}/api/job_agent/jobs/", json=JOB, timeout=5)
    r = requests.post(f"http://127.0.0.1:{port}/api/job_agent/jobs/", json=JOB, timeout=10)
    assert r.status_code == 401, (r.status_code, r.text[:300])
    assert not Path("/tmp/aetheris-audit-pwned").exists()


def test_haproxy_admin_socket_is_owner_only_and_side_ports_local(service):
    import ray  # noqa: F401
    import psutil

    proc, url = service
    def name(p) -> str:  # a child can exit between the listing and the read (Ray's short-lived workers do)
        try:
            return p.name()
        except psutil.Error:
            return ""

    hap = [p for p in psutil.Process(proc.pid).children(recursive=True) if name(p) == "haproxy"]
    assert hap
    cmd = hap[0].cmdline()
    cfg = Path(cmd[cmd.index("-f") + 1])
    # Serve rewrites its template into this file on every reload, then starts HAProxy through
    # haproxy_front.py, which hardens it: between the two the file is briefly the raw template
    # (in a private directory; the running HAProxy still has the hardened one).  Read it once hardened.
    deadline = time.monotonic() + 30
    while MARK not in (text := cfg.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert MARK in text
    sock = Path(re.search(r"stats socket (\S+) mode 600 level admin", text).group(1))
    mode = sock.stat().st_mode
    assert stat.S_ISSOCK(mode) and mode & 0o077 == 0, oct(mode)
    assert cfg.parent.parent.stat().st_mode & 0o077 == 0  # the private directory
    for port in re.findall(r"bind (\S+)", text):
        assert port.startswith("127.0.0.1:"), port
    # no key, no forecast; the open routes stay open
    assert requests.post(f"{url}/v1/forecast", json={"asset": "SYN-ETH", "horizon": 1}, timeout=30).status_code == 401
    assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
