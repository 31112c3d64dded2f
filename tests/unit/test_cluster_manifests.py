"""Every manifest under cluster/ and deployments/ parses, points at code that exists, and the copies agree."""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "cluster" / "kuberay" / "networkpolicies.yaml"
MANIFESTS = sorted(p for p in (ROOT / "cluster").rglob("*.yaml") if p != POLICIES) + [
    ROOT / "deployments" / "serve_config.yaml"]


def load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict), f"{path} is not a YAML mapping"
    return doc


def attr_exists(import_path: str) -> bool:
    module, _, attr = import_path.partition(":")
    if importlib.util.find_spec(module) is None:
        return False
    src = Path(importlib.util.find_spec(module).origin).read_text(encoding="utf-8")
    return f"def {attr}(" in src or f"class {attr}" in src or f"{attr} =" in src


def cli_commands() -> set[str]:
    return {p.stem for p in (ROOT / "aetheris_ray" / "cli").glob("*.py") if not p.stem.startswith("_")}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_manifest_parses(path):
    doc = load(path)
    if "kind" in doc:
        assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] in {"RayService", "RayJob", "RayCluster"}


def serve_apps(doc: dict) -> list[dict]:
    if doc.get("kind") == "RayService":
        doc = yaml.safe_load(doc["spec"]["serveConfigV2"])
    return doc.get("applications", [])


@pytest.mark.parametrize("path", [p for p in MANIFESTS if serve_apps(load(p))], ids=lambda p: p.name)
@pytest.mark.ray
def test_serve_import_paths_exist(path):
    from deployments.app import AppArgs
    from deployments.models import NETWORK_DEPLOYMENTS

    for app in serve_apps(load(path)):
        assert attr_exists(app["import_path"]), app["import_path"]
        AppArgs.model_validate(app.get("args", {}))  # the builder accepts the args
        names = {d["name"] for d in app["deployments"]}
        assert names == {"Ingress", "Features", "Simulator", "Calibrator", *NETWORK_DEPLOYMENTS.values()}
        for d in app["deployments"]:
            assert d["max_ongoing_requests"] >= 32, d["name"]
            assert d["ray_actor_options"]["num_cpus"] in (0, 0.25, 0.5), d["name"]


def test_serve_config_fits_two_cpus():
    app = serve_apps(load(ROOT / "deployments" / "serve_config.yaml"))[0]
    cpus = sum(d["ray_actor_options"]["num_cpus"] for d in app["deployments"])
    cpus += app["args"]["pool_actors"] * app["args"]["actor_num_cpus"]
    assert cpus <= 1.5, f"the graph reserves {cpus} CPUs at min replicas; keep headroom on a 2-CPU machine"


@pytest.mark.slow
def test_rayservice_is_generated_from_serve_config():
    sys.path.insert(0, str(ROOT / "cluster"))
    try:
        import gen_rayservice
    finally:
        sys.path.pop(0)
    doc = load(ROOT / "cluster" / "kuberay" / "rayservice.yaml")
    assert yaml.safe_load(doc["spec"]["serveConfigV2"]) == gen_rayservice.serve_config_for_k8s()
    src = load(ROOT / "deployments" / "serve_config.yaml")
    k8s = yaml.safe_load(doc["spec"]["serveConfigV2"])
    for a, b in zip(src["applications"], k8s["applications"]):
        assert a["deployments"] == b["deployments"] and a["import_path"] == b["import_path"]
    r = subprocess.run([sys.executable, str(ROOT / "cluster" / "gen_rayservice.py"), "--check"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("argv, code, says", [(["--help"], 0, "usage:"), (["-h"], 0, "--check"),
                                              (["--chek"], 2, "unrecognized arguments: --chek")])
@pytest.mark.slow
def test_gen_rayservice_help_and_bad_flags_write_nothing(tmp_path, argv, code, says):
    # the script writes next to itself (ROOT from __file__): run a copy in a scratch tree, from another cwd
    fake, cwd = tmp_path / "repo", tmp_path / "cwd"
    (fake / "cluster" / "kuberay").mkdir(parents=True)
    (fake / "deployments").mkdir()
    cwd.mkdir()
    (fake / "cluster" / "gen_rayservice.py").write_bytes((ROOT / "cluster" / "gen_rayservice.py").read_bytes())
    (fake / "deployments" / "serve_config.yaml").write_bytes((ROOT / "deployments" / "serve_config.yaml").read_bytes())
    real = ROOT / "cluster" / "kuberay" / "rayservice.yaml"
    before, real_before = _files(tmp_path), (real.stat().st_mtime_ns, real.read_bytes())
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    for script in (fake / "cluster" / "gen_rayservice.py", ROOT / "cluster" / "gen_rayservice.py"):
        r = subprocess.run([sys.executable, str(script), *argv], cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == code, r.stdout + r.stderr
        assert says in r.stdout + r.stderr
        assert _files(tmp_path) == before, "the script wrote a file"
    assert (real.stat().st_mtime_ns, real.read_bytes()) == real_before
    # the control: without options the copy does write its manifest (so the checks above can fail)
    r = subprocess.run([sys.executable, str(fake / "cluster" / "gen_rayservice.py")], cwd=cwd, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert set(_files(tmp_path)) - set(before) == {"repo/cluster/kuberay/rayservice.yaml"}
    assert (fake / "cluster" / "kuberay" / "rayservice.yaml").read_bytes() == real.read_bytes()


def test_rayjob_entrypoint_is_a_cli_command():
    doc = load(ROOT / "cluster" / "kuberay" / "rayjob-backtest.yaml")
    argv = shlex.split(doc["spec"]["entrypoint"])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert argv[0] in scripts and attr_exists(scripts[argv[0]])
    assert argv[1] in cli_commands()
    assert "--ray" in argv and importlib.util.find_spec("aetheris_ray.distributed.backtest") is not None


def test_tune_cluster_has_a_gpu_group():
    doc = load(ROOT / "cluster" / "kuberay" / "raycluster-tune.yaml")
    gpu = [g for g in doc["spec"]["workerGroupSpecs"]
           if any("nvidia.com/gpu" in c["resources"]["limits"] for c in g["template"]["spec"]["containers"])]
    assert gpu and gpu[0]["minReplicas"] == 0


def test_cluster_launcher_yaml():
    doc = load(ROOT / "cluster" / "ray-cluster.yaml")
    assert doc["provider"]["type"] == "aws" and doc["head_node_type"] in doc["available_node_types"]
    for cmds in (doc["setup_commands"], doc["head_start_ray_commands"], doc["worker_start_ray_commands"]):
        assert cmds and all(isinstance(c, str) for c in cmds)


def test_start_local_script_is_valid_bash():
    script = ROOT / "cluster" / "start_local.sh"
    assert script.stat().st_mode & 0o111, "start_local.sh is not executable"
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.ray
def test_every_serve_cluster_start_sets_the_serve_env():
    """The proxy reads SERVE_ENV when it starts: each way of starting a Ray for the Serve app sets it."""
    from aetheris_ray.distributed.serving import SERVE_ENV

    launcher = load(ROOT / "cluster" / "ray-cluster.yaml")
    starts = [c for c in launcher["head_start_ray_commands"] + launcher["worker_start_ray_commands"] if "ray start" in c]
    script = (ROOT / "cluster" / "start_local.sh").read_text(encoding="utf-8")
    rayservice = load(ROOT / "cluster" / "kuberay" / "rayservice.yaml")["spec"]["rayClusterConfig"]
    groups = [rayservice["headGroupSpec"], *rayservice["workerGroupSpecs"]]
    envs = [{e["name"]: e.get("value") for e in c.get("env", [])}
            for g in groups for c in g["template"]["spec"]["containers"]]
    assert starts and envs
    for k, v in SERVE_ENV.items():
        assert all(f"{k}={v}" in c for c in starts), f"ray-cluster.yaml: a ray start lacks {k}={v}"
        assert f'export {k}="${{{k}:-{v}}}"' in script, f"start_local.sh does not export {k}"
        assert all(e.get(k) == v for e in envs), f"rayservice.yaml: a container lacks {k}={v}"


# -- issue 14 item 1: Ray closed to the outside on a cluster ---------------------------------------------------


def kuberay_docs() -> dict[str, dict]:
    return {p.name: load(p) for p in sorted((ROOT / "cluster" / "kuberay").glob("*.yaml")) if p != POLICIES}


def test_every_kuberay_cluster_has_ray_token_auth():
    clusters = {}
    for name, doc in kuberay_docs().items():
        spec = doc["spec"]
        clusters[name] = {"RayService": lambda: spec["rayClusterConfig"], "RayCluster": lambda: spec,
                          "RayJob": lambda: spec["rayClusterSpec"]}[doc["kind"]]()
    assert set(clusters) == {"rayservice.yaml", "raycluster-tune.yaml", "rayjob-backtest.yaml"}
    for name, c in clusters.items():
        assert c.get("authOptions") == {"mode": "token"}, f"{name}: Ray's token authentication is not on"


def test_cluster_launcher_starts_every_node_with_token_auth():
    doc = load(ROOT / "cluster" / "ray-cluster.yaml")
    starts = [c for c in doc["head_start_ray_commands"] + doc["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts), starts
    assert any(dst.endswith("/.ray/auth_token") for dst in doc["file_mounts"]), "the token does not reach the nodes"
    assert "--dashboard-host=127.0.0.1" in starts[0]


def policy_docs() -> list[dict]:
    docs = [d for d in yaml.safe_load_all(POLICIES.read_text(encoding="utf-8")) if d]
    assert docs and all(d["apiVersion"] == "networking.k8s.io/v1" and d["kind"] == "NetworkPolicy" for d in docs)
    return docs


RAY_PODS = {"ray.io/is-ray-node": "yes"}
OPERATOR = {"app.kubernetes.io/name": "kuberay-operator"}


def test_network_policies_expose_only_the_serve_port():
    """Default deny on every Ray pod; from outside the Ray pods only Serve's port, and the operator to the dashboard."""
    docs = policy_docs()
    deny = [d for d in docs if d["spec"]["podSelector"].get("matchLabels") == RAY_PODS and not d["spec"].get("ingress")]
    assert deny and "Ingress" in deny[0]["spec"]["policyTypes"], "no default-deny ingress for Ray pods"
    serve_port = yaml.safe_load(kuberay_docs()["rayservice.yaml"]["spec"]["serveConfigV2"])["http_options"]["port"]
    open_ports = set()
    for d in docs:
        for rule in d["spec"].get("ingress", []):
            ports = {(p.get("protocol", "TCP"), p["port"]) for p in rule.get("ports", [])}
            peers = rule.get("from") or []
            if not peers:  # from anywhere: only the Serve HTTP port, only on head pods
                assert ports == {("TCP", serve_port)}, (d["metadata"]["name"], ports)
                assert d["spec"]["podSelector"]["matchLabels"] == {"ray.io/node-type": "head"}
                open_ports |= ports
                continue
            for peer in peers:
                assert "ipBlock" not in peer, d["metadata"]["name"]
                labels = peer.get("podSelector", {}).get("matchLabels")
                if labels == RAY_PODS:  # Ray pods of this namespace: Ray's own ports (token auth on)
                    assert "namespaceSelector" not in peer, d["metadata"]["name"]
                elif labels == OPERATOR:  # the KubeRay operator: the dashboard only
                    assert ports == {("TCP", 8265)}, (d["metadata"]["name"], ports)
                else:
                    raise AssertionError(f"{d['metadata']['name']}: ingress from {peer} is neither Ray nor the operator")
    assert open_ports == {("TCP", serve_port)}


def test_nothing_in_the_repo_turns_ray_auth_off():
    """No code, script, manifest, doc or CI file sets RAY_AUTH_MODE to disabled (RAY_NOTES.md gotcha 5).

    The refusal tests set it on purpose, to check that `aetheris serve` refuses it.
    """
    import re

    pattern = re.compile(r"RAY_AUTH_MODE[\"']?\s*(?:=|:|,)\s*[\"']?disabled")
    allowed = {"tests/integration/test_cli_serve.py", "tests/unit/test_serving_env.py",
               "tests/unit/test_cluster_manifests.py"}
    hits = []
    for top in ("aetheris_ray", "deployments", "cluster", "tune", "data_pipelines", "benchmarks", "tests", "docs", ".ci"):
        for path in (ROOT / top).rglob("*"):
            rel = str(path.relative_to(ROOT))
            if path.is_file() and path.suffix in ("", ".py", ".sh", ".md", ".yaml", ".yml", ".toml") and rel not in allowed:
                text = path.read_text(encoding="utf-8", errors="replace")
                hits += [f"{rel}: {m.group(0)}" for m in pattern.finditer(text)]
    for name in ("Makefile", "README.md"):
        hits += [f"{name}: {m.group(0)}" for m in pattern.finditer((ROOT / name).read_text(encoding="utf-8"))]
    assert not hits, hits
