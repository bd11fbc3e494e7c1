#!/usr/bin/env bash
# The README's demo command: set up, then run the whole system with simulated officers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/vigil demo "$@"
