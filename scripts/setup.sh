#!/usr/bin/env bash
# Everything Vigil needs on a fresh Debian/Ubuntu machine with Python 3.11+: system packages
# (Mosquitto, PostgreSQL server binaries, D-Bus, Node.js for the MicroPython checks and the
# dashboard's libraries, Chromium for the dashboard tests), a virtual environment with the project
# installed and the dashboard's browser libraries (npm ci). Idempotent: a
# second run installs nothing. Services are not started here: the demo and the tests start
# private ones when none is configured (backend/local/infra.py).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
have mosquitto || missing+=(mosquitto)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || have initdb || missing+=(postgresql)
have dbus-daemon || missing+=(dbus)
have node || missing+=(nodejs)
have npm || missing+=(npm)
"$PYTHON" -c "import venv, ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)
# the compiled ingest path (backend/ingest/_fastpath.pyx, built by pip install -e .): a C compiler,
# Python's headers and libcrypto's
have gcc || missing+=(gcc)
"$PYTHON" -c "import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h'))" \
  >/dev/null 2>&1 || missing+=(python3-dev)
[ -f /usr/include/openssl/sha.h ] || missing+=(libssl-dev)
if [ "${VIGIL_BROWSER_TESTS:-1}" = "1" ]; then
  have chromium || missing+=(chromium)
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      echo "setup: not root and no sudo; please install: ${missing[*]}" >&2; exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Services are started by the project itself; keep apt from starting system ones.
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.vigil-installed
built=$(ls backend/ingest/_fastpath.*.so 2>/dev/null | head -n 1 || true)
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] || [ -z "$built" ] \
   || [ backend/ingest/_fastpath.pyx -nt "$built" ]; then
  echo "setup: installing the project and its test, evaluation and firmware tools"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test,eval,firmware]"
  touch "$stamp"
fi
# the dashboard's browser libraries (backend/dashboard/package.json: Leaflet for the map, uPlot for
# the plots) from the npm registry, at the versions package-lock.json pins; the backend serves them
# under /static/vendor/. npm writes node_modules/.package-lock.json when it installs: newer than the
# lock file means nothing to do.
dash=backend/dashboard
if [ ! -f "$dash/node_modules/.package-lock.json" ] || [ "$dash/package-lock.json" -nt "$dash/node_modules/.package-lock.json" ]; then
  echo "setup: installing the dashboard's map and plot libraries (npm ci)"
  (cd "$dash" && npm ci --omit=dev --no-audit --no-fund --loglevel=error)
fi
echo "setup: ready"
