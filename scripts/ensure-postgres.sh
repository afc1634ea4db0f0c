#!/usr/bin/env bash
# Installs Debian's PostgreSQL server package when its binaries are missing. The production-mode
# tests (tests/postgres) start their own server with initdb / pg_ctl and fail, by design, without
# them. Debian keeps the binaries in /usr/lib/postgresql/<version>/bin, off PATH.
set -euo pipefail
if command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "PostgreSQL server binaries not found: installing Debian's postgresql package" >&2
$sudo apt-get update
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
