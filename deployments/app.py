"""The typed app builder: ``build_app(args: AppArgs) -> Application``.

``serve run deployments/serve_config.yaml`` calls it with the YAML's ``args``;
``aetheris serve`` and the tests call it directly.  Where the data and the state
live comes from `AppArgs`, falling back to `aetheris_ray.config.Settings`
(``AETHERIS_HOME``, ``AETHERIS_API_KEYS``, ...) read where the builder runs.
"""

from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from deployments.ingress import Ingress
from deployments.models import NETWORK_DEPLOYMENTS, Calibrator, Features, Network, Simulator


class AppArgs(BaseModel):
    """Arguments of the Serve app (the ``args:`` of serve_config.yaml)."""

    model_config = ConfigDict(extra="forbid")

    data: Optional[str] = Field(default=None, description="CSV file or directory (like shared/data)")
    store: Optional[str] = Field(default=None, description="Parquet store directory")
    synthetic: bool = Field(default=False, description="serve the seeded synthetic market (SYN-BTC, SYN-ETH, SYN-ALT)")
    home: Optional[str] = Field(default=None, description="AETHERIS_HOME (store, state); default from Settings")
    api_keys: Optional[list[str]] = Field(default=None, description="API keys; None = Settings.api_keys, [] = no auth")
    pool_actors: int = Field(default=2, ge=1, le=64, description="simulator actors for sharded Monte Carlo")
    actor_num_cpus: float = Field(default=0.25, ge=0, le=8, description="CPUs each simulator actor reserves")
    local_max_paths: Optional[int] = Field(default=None, ge=0, description="largest request simulated without sharding")
    deployment_config: Optional[str] = Field(default=None, description="a Serve config (like serve_config.yaml) whose "
                                             "deployments' options (autoscaling bounds, resources, user_config) "
                                             "are applied; None: the decorators' defaults (fixed single replicas)")
    networks: bool = Field(default=True, description="run each neural part's network in its own deployment "
                           "(False: in the replica that needs it)")
    reserve_cpus: bool = Field(default=True, description="False: every replica and actor reserves 0 CPUs (a test or "
                               "demo app sharing a small Ray with Tune / Data work that needs whole CPUs)")


#: The Serve config shipped with the package (``serve run deployments/serve_config.yaml``).
SERVE_CONFIG = Path(__file__).with_name("serve_config.yaml")


def deployment_options(path: str | Path = SERVE_CONFIG, app: str = "aetheris") -> dict[str, dict[str, Any]]:
    """Each deployment's options in a Serve config file, by deployment name (``name`` removed).

    >>> deployment_options()["Calibrator"]["num_replicas"]
    1
    """
    import yaml

    from aetheris_ray.errors import InvalidInput

    try:
        doc = yaml.safe_load(Path(path).read_text())
        spec = next(a for a in doc["applications"] if a.get("name") == app)
        return {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in spec.get("deployments", [])}
    except (OSError, yaml.YAMLError, KeyError, TypeError, StopIteration) as e:
        raise InvalidInput(f"deployment config {path}: cannot read the options of application {app!r} "
                           f"({type(e).__name__}: {e})") from None


def build_app(args: AppArgs) -> Application:
    """Bind the deployment graph: Ingress -> Features (-> Calibrator), Simulator, Calibrator; each of
    Ingress, Features and Simulator -> one `Network` deployment per neural part (`NETWORK_DEPLOYMENTS`)."""
    from aetheris_ray.config import load_settings

    if not isinstance(args, AppArgs):
        args = AppArgs.model_validate(dict(args or {}))
    settings = load_settings(home=args.home, store=args.store)
    keys = list(settings.api_keys) if args.api_keys is None else list(args.api_keys)
    source = {"data": args.data, "store": args.store, "synthetic": args.synthetic, "home": str(settings.home)}
    deps = {"features": Features, "simulator": Simulator, "calibrator": Calibrator, "ingress": Ingress}
    if args.networks:
        deps.update({part: Network.options(name=name) for part, name in NETWORK_DEPLOYMENTS.items()})
    actor_cpus = args.actor_num_cpus
    if args.deployment_config:
        opts = deployment_options(args.deployment_config)
        deps = {k: d.options(**opts[d.name]) if d.name in opts else d for k, d in deps.items()}
    if not args.reserve_cpus:
        deps = {k: d.options(ray_actor_options={"num_cpus": 0}) for k, d in deps.items()}
        actor_cpus = 0.0
    networks = {part: deps[part].bind(part) for part in NETWORK_DEPLOYMENTS if part in deps}
    calibrator = deps["calibrator"].bind(str(settings.state_path))
    features = deps["features"].bind(source, calibrator, networks)
    simulator = deps["simulator"].bind(args.pool_actors, actor_cpus, args.local_max_paths, networks)
    return deps["ingress"].bind(features, simulator, calibrator, api_keys=keys, local_max_paths=args.local_max_paths,
                                networks=networks)
