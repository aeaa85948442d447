#!/usr/bin/env bash
# Install the Debian packages the platform and its tests need, only those missing.
# Idempotent: a second run installs nothing. Needs root (or sudo) on Debian/Ubuntu;
# elsewhere it prints what to install and exits non-zero.
set -euo pipefail

packages=(
  postgresql-15 postgresql-15-postgis-3   # database + PostGIS
  redis-server                            # live state, streams, Celery broker
  mosquitto mosquitto-clients             # MQTT broker (the project runs its own config on its own port)
  chromium                                # headless browser tests
  fonts-dejavu-core                       # text in screenshots and PDFs
  nodejs npm                              # front-end assets from the npm registry
  python3 python3-venv                    # the venv (any Python >= 3.11 on PATH is used first)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node and npm may come from elsewhere (nodesource, nvm): accept any node >= 18 on PATH.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<< "${missing[*]:-}"

if [ ${#missing[@]} -eq 0 ]; then
  echo "debian packages: all present"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "error: not a Debian system; install these yourself: ${missing[*]} (or use 'docker compose up')" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "error: need root to install: ${missing[*]} (run as root, or use 'docker compose up')" >&2; exit 1
  fi
fi
echo "debian packages: installing ${missing[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
