"""The HTTP API fuzzed from its own OpenAPI schema with schemathesis, as every role.

A backend runs as its own process (``vigil backend run``) on a fresh, migrated database that
holds one agency with a person of each role, an officer on shift with a device and a gateway.
For every operation of /openapi.json and every caller (anonymous, officer, supervisor, fleet
admin, auditor, gateway), hypothesis generates requests from the schema; each answer must not be
a server error (5xx) and must match the response schema the operation declares.

Left out: /api/v1/events (a server-sent stream that never ends by design) and
POST /api/v1/auth/logout (it would revoke the token the rest of the run uses; it is fuzzed
last, once per role)."""
from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from pathlib import Path

import httpx

STREAMING = {"GET /api/v1/events"}
LAST = {"POST /api/v1/auth/logout"}
ROLES = ("officer", "supervisor", "fleet_admin", "auditor")
PASSWORD = "fuzzing horse battery staple"


@dataclasses.dataclass
class FuzzFailure:
    operation: str
    caller: str
    error: str


@dataclasses.dataclass
class FuzzReport:
    operations: int
    callers: int
    requests: int
    by_status: dict[int, int]
    failures: list[FuzzFailure]
    seconds: float

    def text(self) -> str:
        lines = [f"schemathesis: {self.operations} operations x {self.callers} callers, {self.requests} requests "
                 f"in {self.seconds:.0f} s; answers by status: {dict(sorted(self.by_status.items()))}"]
        lines += [f"  FAIL {f.operation} as {f.caller}: {f.error}" for f in self.failures]
        lines.append("no 5xx, no schema violation" if not self.failures else f"{len(self.failures)} failing operation/caller pairs")
        return "\n".join(lines)


async def seed_roles(database_url: str, secret: str, agency: str) -> dict[str, str]:
    """One agency with a person of each role, an officer wearing a device, a gateway; returns
    {caller: bearer token source}: usernames for people, the API token for the gateway."""
    from backend.identity import auth, fleet
    from backend.db import engine as db
    from backend.app.config import BackendSettings

    settings = BackendSettings(database_url=database_url, secret_key=secret)
    db.upgrade(settings)
    engine = db.create_engine(settings)
    try:
        await fleet.ensure_agency(engine, agency)
        officer = await fleet.create_officer(engine, agency, "F-1", "Officer Fuzz", "Unit 1")
        device_id = 0x0F000001
        await fleet.provision_device(engine, secret, agency, device_id)
        await fleet.assign_device(engine, device_id, officer)
        callers = {}
        for role in ROLES:
            name = f"{agency}-{role}"
            await auth.create_user(engine, name, PASSWORD, role, agency, officer if role == "officer" else None)
            callers[role] = name
        gateway = await auth.register_gateway(engine, agency, "gw-fuzz", [device_id])
        callers["gateway"] = gateway.api_token
    finally:
        await engine.dispose()
    return callers


def login_all(base_url: str, callers: dict[str, str]) -> dict[str, str | None]:
    tokens: dict[str, str | None] = {"anonymous": None}
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for caller, name in callers.items():
            if caller == "gateway":
                tokens[caller] = name
                continue
            r = http.post("/api/v1/auth/token", data={"username": name, "password": PASSWORD})
            r.raise_for_status()
            tokens[caller] = r.json()["access_token"]
    return tokens


def fuzz(base_url: str, tokens: dict[str, str | None], max_examples: int, seed: int = 0) -> FuzzReport:
    """Run schemathesis against a running backend; never raises for a failing check (it is
    reported)."""
    import hypothesis
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    checks = [not_a_server_error, response_schema_conformance, content_type_conformance]
    by_status: dict[int, int] = {}
    failures: list[FuzzFailure] = []
    requests = 0
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in operations if f"{op.method.upper()} {op.path}" not in STREAMING]
    ordered = [op for op in operations if f"{op.method.upper()} {op.path}" not in LAST] + \
              [op for op in operations if f"{op.method.upper()} {op.path}" in LAST]
    with httpx.Client(timeout=30):
        for op in ordered:
            for caller, token in tokens.items():
                headers = {"Authorization": f"Bearer {token}"} if token else {}

                @hypothesis.settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
                                     suppress_health_check=list(hypothesis.HealthCheck), print_blob=False,
                                     phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
                @hypothesis.given(case=op.as_strategy())
                def one(case):
                    nonlocal requests
                    response = case.call(base_url=base_url, headers=headers, timeout=30)
                    requests += 1
                    by_status[response.status_code] = by_status.get(response.status_code, 0) + 1
                    case.validate_response(response, checks=checks)

                try:
                    one()
                except BaseException as exc:  # a failing check (an exception group) or a transport error: reported
                    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                        raise
                    failures.append(FuzzFailure(f"{op.method.upper()} {op.path}", caller, _first_line(exc)))
    return FuzzReport(len(ordered), len(tokens), requests, by_status, failures, time.monotonic() - started)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return " | ".join(line.strip() for line in text.splitlines()[:6] if line.strip())[:600]


def main(max_examples: int, out: Path) -> int:
    """``vigil bench schemathesis``: the whole run against a backend process of its own."""
    import contextlib
    import logging

    from backend.local import infra
    from backend.bench.processes import BackendProcess, backend_env
    from backend.bench.soak import _drop_database

    logging.basicConfig(level=logging.WARNING)
    pg_url = "postgresql://postgres@127.0.0.1:5432/postgres"
    mqtt_url = "mqtt://127.0.0.1:1883"
    with contextlib.ExitStack() as stack:
        if not infra.pg_url_reachable(pg_url):
            pg_url = stack.enter_context(infra.PrivatePostgres()).url
        if not infra.mqtt_url_reachable(mqtt_url):
            mqtt_url = stack.enter_context(infra.PrivateMosquitto(out / "mosquitto")).url
        database = "vigil_fuzz_" + uuid.uuid4().hex[:10]
        database_url = pg_url.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + "/" + database
        stack.callback(_drop_database, pg_url, database)
        agency, secret = "fz" + uuid.uuid4().hex[:6], "fuzz-" + uuid.uuid4().hex + uuid.uuid4().hex
        callers = asyncio.run(seed_roles(database_url, secret, agency))
        env = backend_env(database_url=database_url, mqtt_url=mqtt_url, agencies=[agency], http_port=infra.free_port(),
                          client_id="vigil-fuzz-" + agency, secret_key=secret, login_max_failures=1_000_000,
                          login_max_failures_per_address=1_000_000)
        backend = stack.enter_context(BackendProcess(env, out / "backend.log"))
        report = fuzz(backend.url, login_all(backend.url, callers), max_examples)
    print(report.text())
    return 0 if not report.failures else 1
