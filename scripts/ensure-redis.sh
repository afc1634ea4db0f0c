#!/usr/bin/env bash
# Installs Debian's redis-server package when the binary is missing. The Celery tests
# (tests/celery) and `make run-cluster` start their own private Redis broker
# (ffe_dagster/local_broker.py) and fail, by design, without it. The package's own service is
# not used (nothing here assumes a broker already running).
set -euo pipefail
if command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "redis-server not found: installing Debian's redis-server package" >&2
$sudo apt-get update
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server
