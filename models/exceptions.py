"""The one exception tree of :mod:`models`.

Every error raised on purpose by a model function derives from :class:`ModelError`; argument
errors are also :class:`ValueError` so callers that only know the standard library can catch them.
"""
from __future__ import annotations


class ModelError(Exception):
    """Base class of every error raised on purpose by :mod:`models`."""


class InvalidSignalError(ModelError, ValueError):
    """An input array has the wrong shape, too few samples or non-finite values."""


class UnknownOptionError(ModelError, ValueError):
    """A ``method=``/``placement=`` name is not one of the valid ones; the message lists them."""

    def __init__(self, kind: str, name: object, valid: tuple[str, ...] | list[str]) -> None:
        self.kind = kind
        self.name = name
        self.valid = tuple(valid)
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s are: {', '.join(self.valid)}")


def check_option(kind: str, name: object, valid: tuple[str, ...] | list[str]) -> str:
    """Return ``name`` if it is one of ``valid``, else raise :class:`UnknownOptionError`."""
    if name not in valid:
        raise UnknownOptionError(kind, name, valid)
    return name  # type: ignore[return-value]


def check_sampling_rate(sampling_rate: float) -> float:
    """Return ``sampling_rate`` as float after checking it is a positive finite number."""
    try:
        rate = float(sampling_rate)
    except (TypeError, ValueError) as exc:
        raise InvalidSignalError(f"sampling_rate must be a number in Hz, got {sampling_rate!r}") from exc
    if not rate > 0 or rate != rate or rate == float("inf"):
        raise InvalidSignalError(f"sampling_rate must be a positive number in Hz, got {sampling_rate!r}")
    return rate
