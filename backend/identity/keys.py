"""The backend's two keys: one signs people's access tokens (``token_key``), the other wraps
device keys at rest (``secret_key``, the name of the single secret that used to do both, so the
device keys it wrapped stay readable without a migration).

Production takes both from its configuration and refuses to start without them (the settings
check that). Development without them generates its own once, keeps them in ``keys_file``
(readable by its owner only) and says so loudly at every start: there is no published default
any more, so nobody can forge a token for someone else's development backend."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import secrets
import stat
import tempfile
from pathlib import Path

from pydantic import SecretStr

from backend.app.config import BackendSettings
from backend.exceptions import ConfigurationError

log = logging.getLogger("vigil.keys")

KEY_NAMES = ("secret_key", "token_key")


def with_keys(settings: BackendSettings) -> BackendSettings:
    """``settings`` with both keys present: as configured, else from (or into) ``keys_file``."""
    missing = [name for name in KEY_NAMES if getattr(settings, name) is None]
    if not missing:
        return settings
    if settings.environment == "production":  # the settings refuse this already; never generate here
        raise ConfigurationError("production needs VIGIL_SECRET_KEY and VIGIL_TOKEN_KEY configured")
    stored = _load_or_create(Path(settings.keys_file))
    return settings.model_copy(update={name: SecretStr(stored[name]) for name in missing})


def _load_or_create(path: Path) -> dict[str, str]:
    try:
        return _load(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys = {name: secrets.token_urlsafe(48) for name in KEY_NAMES}
    text = json.dumps({**keys, "generated_at": dt.datetime.now(dt.timezone.utc).isoformat()}, indent=2)
    # Written whole to a private temporary file, then linked into place: a process that starts at
    # the same moment (two shards of a bench) finds either no file or the complete one, never a
    # half-written one (it read an empty file and failed to start).
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic; refuses an existing file
        except FileExistsError:
            return _load(path)  # another process made them first
    finally:
        os.unlink(tmp)
    log.warning("DEVELOPMENT KEYS GENERATED: no VIGIL_SECRET_KEY / VIGIL_TOKEN_KEY configured, so new keys were written "
                "to %s (owner-only). Whoever reads that file can sign in as anyone. Production refuses to start without "
                "configured keys.", path.resolve())
    return keys


def _load(path: Path) -> dict[str, str]:
    mode = path.stat().st_mode  # FileNotFoundError: not made yet
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(f"{path} is open to other users (mode {stat.S_IMODE(mode):o}); chmod 600 it or configure the keys")
    try:
        stored = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigurationError(f"{path} is not the keys file Vigil writes ({exc}); delete it to generate new ones") from exc
    if not isinstance(stored, dict) or not all(isinstance(stored.get(name), str) and len(stored[name]) >= 32 for name in KEY_NAMES):
        raise ConfigurationError(f"{path} does not hold both keys; delete it to generate new ones")
    log.warning("DEVELOPMENT KEYS: signing tokens and wrapping device keys with the generated keys in %s; "
                "configure VIGIL_SECRET_KEY and VIGIL_TOKEN_KEY for anything but development", path.resolve())
    return stored
