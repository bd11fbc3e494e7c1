#!/usr/bin/env bash
# The README's test command: set up, then run the whole test suite (real Mosquitto, PostgreSQL,
# D-Bus, MicroPython and, for the dashboard, Chromium). Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$rc"
