"""Local infrastructure for the demo and the tests: a private Mosquitto and a private PostgreSQL.

Used only when no broker or database is configured and reachable, so the README commands work
on a fresh machine where nothing runs yet. Production deployments configure real services.
"""
from __future__ import annotations

import getpass
import glob
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger("vigil.infra")

# A private service gets this long to accept connections before we give up with its log.
STARTUP_TIMEOUT_S = 30.0


class InfraError(RuntimeError):
    """A local service could not be found or started; the message says what to install."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait_for_port(host: str, port: int, proc: subprocess.Popen, logfile: Path, what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if port_open(host, port, 0.2):
            return
        if proc.poll() is not None and what != "PostgreSQL":
            break
        time.sleep(0.05)
    text = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
    raise InfraError(f"{what} did not start on {host}:{port}; its log ends with:\n{text}")


def find_binary(name: str) -> str | None:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def dynsec_plugin() -> str | None:
    """Mosquitto's dynamic security plugin, where Debian (and a source build) installs it."""
    for pattern in ("/usr/lib/*/mosquitto_dynamic_security.so", "/usr/lib/mosquitto_dynamic_security.so",
                    "/usr/local/lib/mosquitto_dynamic_security.so", "/usr/lib/mosquitto/mosquitto_dynamic_security.so"):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


class PrivateMosquitto:
    """A Mosquitto broker of our own on a free loopback port, with persistence so that QoS 1
    sessions survive a restart; ``stop()`` and ``start()`` let tests take it away and back.

    With ``dynsec_file`` (backend/identity/broker.py ``dynsec_config``) the dynamic security plugin
    decides who may connect and what each may do, and keeps its changes in that file; anonymous
    clients are refused. Without, anyone may connect and do anything."""

    def __init__(self, workdir: Path | None = None, port: int | None = None, *, dynsec_file: Path | None = None,
                 tls_certfile: Path | None = None, tls_keyfile: Path | None = None, tls_port: int | None = None):
        binary = find_binary("mosquitto")
        if not binary:
            raise InfraError("mosquitto is not installed: run scripts/setup.sh (apt-get install mosquitto)")
        self.binary = binary
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="vigil-mqtt-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.dynsec_file = dynsec_file
        self.dynsec_plugin = None
        if dynsec_file is not None:
            self.dynsec_plugin = dynsec_plugin()
            if self.dynsec_plugin is None:
                raise InfraError("Mosquitto's dynamic security plugin (mosquitto_dynamic_security.so) is not installed: "
                                 "install Debian's mosquitto 2.x (scripts/setup.sh)")
        # With a certificate, a second listener speaks MQTT over TLS (mqtts://) on tls_port.
        self.tls_certfile, self.tls_keyfile = tls_certfile, tls_keyfile
        self.tls_port = (tls_port or free_port()) if tls_certfile else None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def tls_url(self) -> str:
        if self.tls_port is None:
            raise InfraError("this broker has no TLS listener (give tls_certfile and tls_keyfile)")
        return f"mqtts://localhost:{self.tls_port}"

    def _write_config(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {self.host}\n"
            + (f"allow_anonymous false\nplugin {self.dynsec_plugin}\nplugin_opt_config_file {self.dynsec_file}\n"
               if self.dynsec_file else "allow_anonymous true\n")
            + "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 1000000\n"
            "max_inflight_messages 100\n"
            f"user {getpass.getuser()}\n"
            f"log_dest file {self.workdir}/mosquitto.log\n"
            + (f"listener {self.tls_port} {self.host}\ncertfile {self.tls_certfile}\nkeyfile {self.tls_keyfile}\n"
               if self.tls_certfile else "")
        )
        return conf

    def start(self) -> "PrivateMosquitto":
        conf = self._write_config()
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_port(self.host, self.port, self.proc, self.workdir / "mosquitto.log", "Mosquitto")
        if self.tls_port:
            _wait_for_port(self.host, self.tls_port, self.proc, self.workdir / "mosquitto.log", "Mosquitto (TLS)")
        log.info("private Mosquitto on %s (data in %s)", self.url, self.workdir)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "PrivateMosquitto":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class PrivatePostgres:
    """A PostgreSQL cluster of our own (initdb in a work directory, a free loopback port).
    PostgreSQL refuses to run as root, so as root it runs as the 'postgres' system user."""

    def __init__(self, workdir: Path | None = None, port: int | None = None, server_settings: dict[str, str] | None = None):
        self.initdb = find_binary("initdb")
        self.pg_ctl = find_binary("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            raise InfraError("PostgreSQL server binaries not found: run scripts/setup.sh (apt-get install postgresql)")
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="vigil-pg-"))
        self.datadir = self.workdir / "data"
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.user = "postgres" if os.geteuid() == 0 else getpass.getuser()
        self.server_settings = dict(server_settings or {})  # extra -c name=value, e.g. shared_preload_libraries

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/postgres"

    def _run_as(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        try:
            return subprocess.run(args, check=True, capture_output=True, text=True, **kw)
        except subprocess.CalledProcessError as exc:
            raise InfraError(f"{' '.join(args)} failed: {exc.stderr.strip() or exc.stdout.strip()}") from exc

    def start(self) -> "PrivatePostgres":
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chmod(self.workdir, 0o777)
            shutil.chown(self.workdir, "postgres")
        if not (self.datadir / "PG_VERSION").exists():
            self._run_as([self.initdb, "-D", str(self.datadir), "-A", "trust", "-U", self.user, "--no-sync", "-E", "UTF8"])
        logfile = self.workdir / "postgres.log"
        opts = f"-p {self.port} -k {self.workdir} -c listen_addresses={self.host} -c fsync=off"
        opts += "".join(f" -c {name}={value}" for name, value in self.server_settings.items())
        self._run_as([self.pg_ctl, "-D", str(self.datadir), "-l", str(logfile), "-o", opts, "-w", "start"])
        log.info("private PostgreSQL on %s:%s (data in %s)", self.host, self.port, self.datadir)
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.datadir / "postmaster.pid").exists():
            self._run_as([self.pg_ctl, "-D", str(self.datadir), "-m", mode, "-w", "stop"])

    def __enter__(self) -> "PrivatePostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def timescaledb_installed() -> bool:
    """Whether TimescaleDB's extension files are installed for the PostgreSQL whose server
    binaries we would run (it is not packaged for Debian; see README, "Storage")."""
    initdb = find_binary("initdb")
    if not initdb:
        return False
    major = Path(initdb).resolve().parent.parent.name  # /usr/lib/postgresql/<major>/bin/initdb
    return Path(f"/usr/share/postgresql/{major}/extension/timescaledb.control").exists()


def mqtt_url_reachable(url: str) -> bool:
    parts = urlsplit(url)
    return port_open(parts.hostname or "127.0.0.1", parts.port or 1883)


def pg_url_reachable(url: str) -> bool:
    parts = urlsplit(url.replace("+asyncpg", "").replace("+psycopg2", ""))
    return port_open(parts.hostname or "127.0.0.1", parts.port or 5432)
