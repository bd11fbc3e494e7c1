"""The backend's exception tree. Lower-layer errors (a FrameError, for one) are mapped to these
at the boundary where they are caught, raised ``from`` the original."""
from __future__ import annotations


class VigilBackendError(Exception):
    """Base of every error the backend raises on purpose."""


class ConfigurationError(VigilBackendError):
    """Settings that must not be used (e.g. the development secret in production)."""


class FrameRejected(VigilBackendError):
    """An uplink frame was refused. ``reason`` is a stable code counted in the metrics:
    bad_topic, unknown_device, retired_device, unassigned_device, wrong_agency, and every
    FrameError reason (truncated, bad_tag, replayed, ...)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class NotFound(VigilBackendError):
    """A requested record does not exist (or is not visible to the caller)."""


class AuthError(VigilBackendError):
    """Missing, malformed, expired or revoked credentials."""


class Conflict(VigilBackendError):
    """The request does not fit the record's current state (e.g. acknowledging a resolved alert)."""


class TaskKeepsFailing(VigilBackendError):
    """A long-running task of the backend failed again and again: the process must be restarted."""

    def __init__(self, task: str, why: str):
        super().__init__(f"task {task} keeps failing ({why})")
        self.task = task
        self.why = why
