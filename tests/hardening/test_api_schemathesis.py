"""The HTTP API fuzzed from its OpenAPI schema (schemathesis) against a backend process on a real
PostgreSQL, as every role: no 5xx, no answer that breaks its declared schema. A few examples per
operation and caller here; ``vigil bench schemathesis --max-examples 100`` runs the long version."""
from __future__ import annotations

import uuid

import pytest

from backend.local import infra
from backend.bench import api_fuzz
from backend.bench.processes import BackendProcess, backend_env

pytest.importorskip("schemathesis")
pytestmark = pytest.mark.integration

SECRET = "schemathesis-" + "s" * 40


async def test_api_fuzzed_as_every_role(database_url, mqtt_broker, agency, tmp_path):
    callers = await api_fuzz.seed_roles(database_url, SECRET, agency)
    env = backend_env(database_url=database_url, mqtt_url=f"mqtt://{mqtt_broker[0]}:{mqtt_broker[1]}", agencies=[agency],
                      http_port=infra.free_port(), client_id="vigil-fuzz-" + uuid.uuid4().hex[:8], secret_key=SECRET,
                      login_max_failures=1_000_000)
    import asyncio
    with BackendProcess(env, tmp_path / "backend.log") as backend:
        tokens = await asyncio.to_thread(api_fuzz.login_all, backend.url, callers)
        report = await asyncio.to_thread(api_fuzz.fuzz, backend.url, tokens, 4)
    print("\n" + report.text())
    assert report.operations >= 30 and report.callers == 6 and report.requests >= report.operations * report.callers
    assert not report.failures, report.text()
    assert not any(status >= 500 for status in report.by_status)
    assert report.by_status.get(200, 0) > 0  # the roles get through, not only refusals


def test_fuzz_reports_a_server_error():
    """The harness can fail: a server that answers 500 is reported, not passed."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    spec = b'{"openapi": "3.0.0", "info": {"title": "t", "version": "1"}, "paths": {"/x": {"get": {"responses": {"200": {"description": "ok"}}}}}}'

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body, code = (spec, 200) if self.path == "/openapi.json" else (b"{}", 500)
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        report = api_fuzz.fuzz(f"http://127.0.0.1:{server.server_port}", {"anonymous": None}, 2)
    finally:
        server.shutdown()
    assert report.failures and "Server error" in report.failures[0].error
