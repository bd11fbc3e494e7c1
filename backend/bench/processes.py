"""The backend as a separate process (``vigil backend run``), for fault tests and the soak.

A test or command may SIGKILL it and start it again on the same port and database: that is how
"the backend died in the middle of an incident" is tested for real. Settings go in through the
environment (VIGIL_*), exactly as in a deployment."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
# A backend process gets this long to answer /health with the broker connected.
READY_TIMEOUT_S = 60.0


def backend_env(*, database_url: str, mqtt_url: str, agencies: list[str], http_port: int,
                client_id: str, **extra: object) -> dict[str, str]:
    """The environment of one backend process: VIGIL_* settings on top of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update({
        "VIGIL_DATABASE_URL": database_url, "VIGIL_MQTT_URL": mqtt_url, "VIGIL_AGENCIES": json.dumps(agencies),
        "VIGIL_HTTP_PORT": str(http_port), "VIGIL_MQTT_CLIENT_ID": client_id,
    })
    for key, value in extra.items():
        env[f"VIGIL_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


class ChildProcess:
    """A child process of ours (``proc``) that can be killed or stopped."""

    proc: subprocess.Popen | None = None
    stop_wait_s = 20.0

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when the machine loses power."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not ended within ``stop_wait_s``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.stop_wait_s)
            except subprocess.TimeoutExpired:
                self.kill()


class BackendProcess(ChildProcess):
    """``vigil backend run`` in a child process; its log goes to ``log_path``."""

    def __init__(self, env: dict[str, str], log_path: Path, *, migrate: bool = False, scheme: str = "http"):
        self.env = env
        self.log_path = Path(log_path)
        self.migrate = migrate
        self.url = f"{scheme}://127.0.0.1:{env['VIGIL_HTTP_PORT']}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self, wait: bool = True, verify: object = True) -> "BackendProcess":
        args = [sys.executable, "-m", "backend.cli", "backend", "run"] + ([] if self.migrate else ["--no-migrate"])
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        log.write(f"\n==== start #{self.starts + 1} ====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.starts += 1
        if wait:
            self.wait_ready(verify=verify)
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S, verify: object = True) -> dict:
        """Wait until /api/v1/health answers with the broker connected and the devices loaded."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"backend exited with {self.proc.returncode}; log ends with:\n{self.log_tail()}")
            try:
                health = httpx.get(f"{self.url}/api/v1/health", timeout=2, verify=verify).json()
                if health.get("broker_connected") and health.get("devices_loaded"):
                    return health
                last = str(health)
            except (httpx.HTTPError, ValueError) as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise TimeoutError(f"backend not ready after {timeout} s ({last}); log ends with:\n{self.log_tail()}")

    def rss_bytes(self) -> int:
        """Resident memory of the backend process (VmRSS)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def metrics(self, verify: object = True) -> dict[str, float]:
        """The backend's Prometheus samples as {"name{label=value}": value}."""
        text = httpx.get(f"{self.url}/metrics", timeout=10, verify=verify).text
        return parse_metrics(text)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def __enter__(self) -> "BackendProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def metric_sum(metrics: dict[str, float], name: str) -> float:
    """Sum of one counter over all its labels (``name`` without the _total suffix)."""
    return sum(v for k, v in metrics.items() if k == f"{name}_total" or k.startswith(f"{name}_total{{"))
