"""Who may do what on the MQTT broker, told to the broker at once.

Each gateway has its own MQTT user and may publish only under its own topics
(``vigil/{agency}/gw/{gateway}/...``) and read only its own downlink; the backend's user reads
every uplink, result, link and state topic and writes every downlink. Anyone else is refused.

RIGHTS below is the one definition of those rules. Mosquitto's dynamic security plugin (shipped
with Debian's mosquitto 2.0) holds them: the backend, as the plugin's admin client, sends its
control topic (``$CONTROL/dynamic-security/v1``) the gateway's client and role when a gateway is
registered and deletes them when it is retired (the plugin kicks a deleted client's live
connection), so neither takes a restart or a SIGHUP. :class:`BrokerAdmin` reconciles what the
broker holds with the gateway registry in PostgreSQL at start-up and every few minutes, so a
broker restarted from an old state converges; until it can, /health says so.

:func:`dynsec_config` writes the plugin's initial file (``vigil broker init``; the private brokers
of the demo and the tests) from the same rights: the admin client, the backend's client and the
registry's gateways, from their stored password hashes.

There is no password/ACL file path any more: it needed the files regenerated and the broker sent
SIGHUP by hand, and every Mosquitto 2.x ships the plugin."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiomqtt
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.db import schema as t
from backend.identity.security import unwrap_gateway_password
from gateway import topics

log = logging.getLogger("vigil.broker")

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
# Clients and roles the backend made carry this description, with the agency they belong to;
# reconciliation deletes only those of the agencies it serves (an operator's own clients, the admin
# among them, and other backends' agencies are never touched).
MANAGED = "managed by vigil from the gateway registry"
BACKEND_ROLE = "vigil-backend"
# Mosquitto's own PBKDF2-SHA512 parameters (src/password_mosq.h: SALT_LEN 12, PW_DEFAULT_ITERATIONS 101),
# so a hash made here and one made by mosquitto_passwd or the plugin are the same kind.
SALT_BYTES = 12
PBKDF2_ITERATIONS = 101

# The rules. "read": subscribe to and receive; "write": publish; "readwrite": both.
RIGHTS: dict[str, tuple[tuple[str, str], ...]] = {
    "backend": (("read", "{root}/+/gw/+/up/#"), ("read", "{root}/+/gw/+/result/#"), ("read", "{root}/+/gw/+/link/#"),
                ("read", "{root}/+/gw/+/state"), ("write", "{root}/+/gw/+/down/#")),
    "gateway": (("write", "{own}/up/#"), ("write", "{own}/result/#"), ("write", "{own}/link/#"),
                ("readwrite", "{own}/state"), ("read", "{own}/down/#")),
}
# How each right reads in the plugin's ACL types.
_ACL_TYPES = {"read": ("subscribePattern", "publishClientReceive"), "write": ("publishClientSend",),
              "readwrite": ("subscribePattern", "publishClientReceive", "publishClientSend")}
# Anything no role allows is refused, receiving included (the plugin's own default lets clients receive).
DEFAULT_ACCESS = {"publishClientSend": False, "publishClientReceive": False, "subscribe": False, "unsubscribe": True}
ADMIN_ACLS = [{"acltype": kind, "topic": "$CONTROL/dynamic-security/#", "allow": True}
              for kind in ("publishClientSend", "publishClientReceive", "subscribePattern")]


class BrokerAdminError(RuntimeError):
    """The broker's control topic could not be reached, or refused a command; the message says which."""


def backend_rights() -> tuple[tuple[str, str], ...]:
    return tuple((access, topic.format(root=topics.ROOT)) for access, topic in RIGHTS["backend"])


def gateway_rights(agency: str, gateway: str) -> tuple[tuple[str, str], ...]:
    own = f"{topics.ROOT}/{agency}/gw/{gateway}"
    return tuple((access, topic.format(own=own)) for access, topic in RIGHTS["gateway"])


def gateway_role(mqtt_username: str) -> str:
    return f"vigil-{mqtt_username}"


def dynsec_acls(rights: tuple[tuple[str, str], ...]) -> list[dict]:
    return [{"acltype": kind, "topic": topic, "allow": True} for access, topic in rights for kind in _ACL_TYPES[access]]


def password_fields(password: str, salt: bytes | None = None) -> dict:
    """The plugin's stored form of a password (its config file): salt, PBKDF2-SHA512 hash, iterations."""
    salt = salt or os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return {"salt": base64.b64encode(salt).decode(), "password": base64.b64encode(digest).decode(), "iterations": PBKDF2_ITERATIONS}


def hash_fields(mosquitto_hash: str) -> dict:
    """The same from a mosquitto_passwd hash (``$7$<iterations>$<salt>$<hash>``, what gateway_mqtt stores)."""
    parts = mosquitto_hash.split("$")
    if len(parts) != 5 or parts[1] != "7":
        raise ValueError("not a Mosquitto PBKDF2-SHA512 ($7$) password hash")
    return {"salt": parts[3], "password": parts[4], "iterations": int(parts[2])}


@dataclass(frozen=True, slots=True)
class BrokerClient:
    """A client the broker should hold: its user, its role and that role's rights."""
    username: str
    role: str
    rights: tuple[tuple[str, str], ...]
    textname: str
    agency: str | None                 # None: the backend's own client (never deleted)
    password: str | None = None        # known: the backend's own, or a gateway's unwrapped
    password_hash: str | None = None   # mosquitto_passwd form, for the initial file

    @property
    def description(self) -> str:
        return f"{MANAGED}: " + (f"agency {self.agency}" if self.agency is not None else "backend")


def managed_agency(description: str | None) -> str | None:
    """The agency a managed gateway client or role belongs to (None: not a managed gateway's)."""
    prefix = f"{MANAGED}: agency "
    return description[len(prefix):] if description and description.startswith(prefix) else None


async def registry_clients(engine: AsyncEngine, secret: str, agencies: list[str] | None = None) -> list[BrokerClient]:
    """Every active gateway (of ``agencies``; None: of all) as a broker client (retired ones are not)."""
    query = (sa.select(t.gateway_mqtt.c.mqtt_username, t.gateway_mqtt.c.mqtt_password_hash, t.gateway_mqtt.c.password_wrapped,
                       t.gateways.c.id, t.gateways.c.agency_id)
             .join(t.gateways, t.gateways.c.id == t.gateway_mqtt.c.gateway_id)
             .where(t.gateways.c.retired_at.is_(None)).order_by(t.gateways.c.id))
    if agencies is not None:
        query = query.where(t.gateways.c.agency_id.in_(agencies))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [BrokerClient(r.mqtt_username, gateway_role(r.mqtt_username), gateway_rights(r.agency_id, r.id),
                         f"gateway {r.id} of {r.agency_id}", r.agency_id, _password(secret, r), r.mqtt_password_hash)
            for r in rows]


def _password(secret: str, row) -> str | None:
    """The gateway's kept password; None when none is kept or it does not unwrap under this
    ``secret_key`` (then the gateway is reported, never a crash of the reconciliation)."""
    if row.password_wrapped is None:
        return None
    try:
        return unwrap_gateway_password(secret, row.mqtt_username, row.password_wrapped)
    except InvalidTag:
        log.error("broker admin: the MQTT password kept for %s does not unwrap under VIGIL_SECRET_KEY", row.mqtt_username)
        return None


def backend_client(username: str, password: str | None) -> BrokerClient:
    return BrokerClient(username, BACKEND_ROLE, backend_rights(), "the Vigil backend", None, password)


def dynsec_config(admin_username: str, admin_password: str, clients: list[BrokerClient]) -> dict:
    """The plugin's initial configuration: the admin client, and ``clients`` with their roles."""
    entries = [{"username": admin_username, "textname": "Vigil broker admin", **password_fields(admin_password),
                "roles": [{"rolename": "vigil-admin"}]}]
    roles = [{"rolename": "vigil-admin", "acls": ADMIN_ACLS}]
    for c in clients:
        secret = (password_fields(c.password) if c.password is not None
                  else hash_fields(c.password_hash) if c.password_hash is not None else None)
        if secret is None:
            raise ValueError(f"no password for broker client {c.username}")
        entries.append({"username": c.username, "textname": c.textname, "textdescription": c.description, **secret,
                        "roles": [{"rolename": c.role}]})
        roles.append({"rolename": c.role, "textdescription": c.description, "acls": dynsec_acls(c.rights)})
    return {"clients": entries, "roles": roles, "groups": [], "defaultACLAccess": DEFAULT_ACCESS}


def write_dynsec_config(path: Path, config: dict) -> Path:
    """Written owner-only (it holds password hashes); never over an existing file: the broker
    keeps its live state in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(config, out, indent=1)
    return path


# ---- the admin client ---------------------------------------------------------------------------

@dataclass(slots=True)
class Reconciled:
    """What one reconciliation changed on the broker."""
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    unrecoverable: list[str] = field(default_factory=list)  # gateways the broker lacks whose password is not kept

    @property
    def changed(self) -> bool:
        return bool(self.created or self.deleted or self.repaired)


def _acl_key(acl: dict) -> tuple[str, str, bool]:
    return acl["acltype"], acl["topic"], bool(acl.get("allow", True))


def plan(desired: list[BrokerClient], clients: list[dict], roles: list[dict],
         agencies: list[str] | None = None) -> tuple[list[dict], Reconciled]:
    """The control commands that turn the broker's ``clients`` and ``roles`` (listClients and
    listRoles, verbose) into ``desired``. Only managed gateways' clients and roles of ``agencies``
    (None: any) are deleted; everything else on the broker is left alone."""
    have_clients = {c["username"]: c for c in clients}
    have_roles = {r["rolename"]: r for r in roles}
    role_cmds: list[dict] = []
    client_cmds: list[dict] = []
    done = Reconciled()
    for d in desired:
        want = dynsec_acls(d.rights)
        role = have_roles.get(d.role)
        if role is None:
            role_cmds.append({"command": "createRole", "rolename": d.role, "textdescription": d.description, "acls": want})
        else:
            has = {_acl_key(a) for a in role.get("acls", [])}
            wanted = {_acl_key(a) for a in want}
            for kind, topic, _ in sorted(has - wanted):
                role_cmds.append({"command": "removeRoleACL", "rolename": d.role, "acltype": kind, "topic": topic})
            for kind, topic, allow in sorted(wanted - has):
                role_cmds.append({"command": "addRoleACL", "rolename": d.role, "acltype": kind, "topic": topic, "allow": allow})
            if has != wanted:
                done.repaired.append(d.role)
        client = have_clients.get(d.username)
        if client is None:
            if d.password is None:
                done.unrecoverable.append(d.username)
                continue
            client_cmds.append({"command": "createClient", "username": d.username, "password": d.password,
                                "textname": d.textname, "textdescription": d.description, "roles": [{"rolename": d.role}]})
            done.created.append(d.username)
            continue
        fixed = False
        if client.get("disabled"):
            client_cmds.append({"command": "enableClient", "username": d.username})
            fixed = True
        held = {r["rolename"] for r in client.get("roles", [])}
        if d.role not in held:
            client_cmds.append({"command": "addClientRole", "username": d.username, "rolename": d.role})
            fixed = True
        if client.get("textdescription") == d.description:
            for extra in sorted(held - {d.role}):
                client_cmds.append({"command": "removeClientRole", "username": d.username, "rolename": extra})
                fixed = True
        if fixed:
            done.repaired.append(d.username)
    wanted_users = {d.username for d in desired}
    wanted_roles = {d.role for d in desired}

    def ours(description: str | None) -> bool:
        owner = managed_agency(description)
        return owner is not None and (agencies is None or owner in agencies)

    deletions = []
    for name, c in sorted(have_clients.items()):
        if ours(c.get("textdescription")) and name not in wanted_users:
            deletions.append({"command": "deleteClient", "username": name})  # the plugin kicks its connection
            done.deleted.append(name)
    for name, r in sorted(have_roles.items()):
        if ours(r.get("textdescription")) and name not in wanted_roles:
            deletions.append({"command": "deleteRole", "rolename": name})
    return role_cmds + client_cmds + deletions, done


class BrokerAdmin:
    """The backend as the dynamic security plugin's admin client. ``converge()`` makes the
    broker hold what the registry says (registration and retirement call it at once);
    ``run()`` converges at start-up, retries every ``retry_s`` while the control topic cannot be
    reached, and checks again every ``resync_s``. Failures are logged once per outage, counted
    (``failures``, vigil_broker_admin_failures) and reported by /health."""

    def __init__(self, mqtt_url: str, admin_username: str, admin_password: str, *, engine: AsyncEngine, secret: str,
                 agencies: list[str] | None = None, ca_file: str | None = None, retry_s: float = 5.0, resync_s: float = 300.0, timeout_s: float = 5.0,
                 metrics_registry=None):
        parts = urlsplit(mqtt_url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self._tls = parts.scheme == "mqtts"
        self._ca_file = ca_file
        self._admin = (admin_username, admin_password)
        # the backend's own client, managed too when its URL carries a password
        self._backend = backend_client(parts.username, parts.password) if parts.username else None
        self._engine, self._secret = engine, secret
        self.agencies = None if agencies is None or "+" in agencies else list(agencies)
        self.retry_s, self.resync_s, self.timeout_s = retry_s, resync_s, timeout_s
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.failures = 0
        self.failing_since: float | None = None  # monotonic
        self.last_error: str | None = None
        self.last_converged: float | None = None  # wall clock
        self.unrecoverable: list[str] = []
        self._failure_counter = None
        if metrics_registry is not None:
            from prometheus_client import Counter
            self._failure_counter = Counter("vigil_broker_admin_failures", "Attempts to reach the broker's dynamic "
                                            "security control topic that failed (retried)", registry=metrics_registry)

    # -- the control topic --------------------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        tls = None
        if self._tls:
            from backend.ingest.mqtt import tls_context
            tls = tls_context(self._ca_file)
        return aiomqtt.Client(self._host, self._port, username=self._admin[0], password=self._admin[1],
                              identifier=f"vigil-broker-admin-{uuid.uuid4().hex[:8]}", protocol=aiomqtt.ProtocolVersion.V5,
                              tls_context=tls, timeout=self.timeout_s)

    async def control(self, commands: list[dict]) -> list[dict]:
        """Send ``commands`` in one message; their responses in order. BrokerAdminError when the
        broker cannot be reached, does not answer within ``timeout_s`` or refuses one of them."""
        if not commands:
            return []
        tagged = [{**c, "correlationData": uuid.uuid4().hex} for c in commands]
        pending = {c["correlationData"] for c in tagged}
        answers: dict[str, dict] = {}
        try:
            async with asyncio.timeout(self.timeout_s), self._client() as client:
                await client.subscribe(RESPONSE_TOPIC, qos=1)
                await client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}).encode(), qos=1)
                async for message in client.messages:
                    try:
                        body = json.loads(bytes(message.payload))
                    except ValueError:
                        continue
                    for response in body.get("responses", []) if isinstance(body, dict) else []:
                        if response.get("correlationData") in pending:
                            answers[response["correlationData"]] = response
                    if pending <= answers.keys():
                        break
        except TimeoutError as exc:
            raise BrokerAdminError(f"the broker's control topic did not answer within {self.timeout_s:g} s (is the dynamic "
                                   f"security plugin loaded, and {self._admin[0]!r} its admin?)") from exc
        except aiomqtt.MqttError as exc:
            raise BrokerAdminError(f"cannot reach the broker at {self._host}:{self._port} as {self._admin[0]!r}: {exc}") from exc
        out = [answers[c["correlationData"]] for c in tagged]
        refused = [f"{c['command']} {c.get('username') or c.get('rolename') or ''}: {a['error']}".strip()
                   for c, a in zip(commands, out) if a.get("error")]
        if refused:
            raise BrokerAdminError("the broker refused " + "; ".join(refused))
        return out

    # -- reconciliation -------------------------------------------------------------------------------

    async def desired(self) -> list[BrokerClient]:
        clients = await registry_clients(self._engine, self._secret, self.agencies)
        return ([self._backend] if self._backend else []) + clients

    async def converge(self) -> Reconciled:
        """Make the broker hold exactly the registry's gateways (and the backend's client).
        Raises BrokerAdminError (counted, logged once) when it cannot; ``run`` retries."""
        async with self._lock:
            try:
                desired = await self.desired()
                listed = await self.control([{"command": "listClients", "verbose": True},
                                             {"command": "listRoles", "verbose": True}])
                commands, done = plan(desired, listed[0]["data"]["clients"], listed[1]["data"]["roles"], self.agencies)
                await self.control(commands)
            except BrokerAdminError as exc:
                self._failed(exc)
                raise
        self._converged(done)
        return done

    async def converge_soon(self) -> str | None:
        """For registration and retirement: converge now; when that fails, the error (the
        background loop keeps retrying)."""
        try:
            await self.converge()
        except BrokerAdminError as exc:
            self._wake.set()
            return str(exc)
        return None

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self._failure_counter is not None:
            self._failure_counter.inc()
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            log.error("broker admin: %s; gateways registered or retired meanwhile wait, retrying every %.0f s", exc, self.retry_s)
        self.last_error = str(exc)

    def _converged(self, done: Reconciled) -> None:
        if self.failing_since is not None:
            log.warning("broker admin: the control topic answers again after %.0f s; the broker holds the registry",
                        time.monotonic() - self.failing_since)
        self.failing_since, self.last_error = None, None
        self.last_converged = time.time()
        if done.changed:
            log.info("broker admin: created %s, deleted %s, repaired %s", done.created or "-", done.deleted or "-", done.repaired or "-")
        if done.unrecoverable and done.unrecoverable != self.unrecoverable:
            log.error("broker admin: the broker lacks %s, whose MQTT passwords are not kept (registered before they were): "
                      "admit them with a file from `vigil broker init`, or retire them and register new ones", ", ".join(done.unrecoverable))
        self.unrecoverable = done.unrecoverable

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.converge()
                delay = self.resync_s
            except BrokerAdminError:
                delay = self.retry_s
            except (sa.exc.SQLAlchemyError, OSError) as exc:  # the registry cannot be read: try again
                self._failed(BrokerAdminError(f"the gateway registry could not be read ({exc.__class__.__name__})"))
                delay = self.retry_s
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    # -- health ---------------------------------------------------------------------------------------

    def problems(self, grace_s: float = 0.0) -> list[str]:
        """What is wrong, once the control topic has failed for ``grace_s``."""
        out = []
        if self.failing_since is not None and time.monotonic() - self.failing_since >= grace_s:
            out.append(f"broker admin failing for {time.monotonic() - self.failing_since:.0f} s ({self.last_error}): "
                       "gateways registered or retired meanwhile are not yet admitted or refused by the broker")
        if self.unrecoverable:
            out.append(f"the broker lacks gateway(s) {', '.join(self.unrecoverable)} and their MQTT passwords are not kept: "
                       "admit them with a file from `vigil broker init`, or retire them and register new ones")
        return out

    def state(self) -> dict:
        return {"state": "failing" if self.failing_since is not None else "ok" if self.last_converged else "starting",
                "failures": self.failures, "last_error": self.last_error,
                "last_converged": dt.datetime.fromtimestamp(self.last_converged, dt.timezone.utc).isoformat()
                if self.last_converged else None,
                "unrecoverable": list(self.unrecoverable)}

