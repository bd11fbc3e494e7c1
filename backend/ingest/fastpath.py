"""Whether ingest's compiled path (``_fastpath``, built from _fastpath.pyx by ``pip install -e .``)
is here. Without it ingest runs the pure-Python reference, the same frames at several times the
CPU: said in the log at start-up and by ``vigil_ingest_compiled`` (0) in /metrics."""
from __future__ import annotations

from backend.exceptions import VigilBackendError
from firmware import frame as F

# the _fastpath source revision this code calls (its REVISION); a build of another is not used
REVISION = 3

try:
    from backend.ingest import _fastpath
except ImportError as exc:  # not built: no compiler, libcrypto or Cython when it was installed
    _fastpath = None
    UNAVAILABLE: str | None = (f"the compiled ingest path is not built ({exc}); run scripts/setup.sh "
                               "(pip install -e . builds backend/ingest/_fastpath.pyx)")
else:
    if getattr(_fastpath, "REVISION", None) != REVISION:
        UNAVAILABLE = (f"the compiled ingest path is a stale build (revision {getattr(_fastpath, 'REVISION', None)}, "
                       f"this code needs {REVISION}); run scripts/setup.sh to rebuild it")
        _fastpath = None
    elif any(getattr(F, name) != value for name, value in _fastpath.LAYOUT.items()):
        # firmware/frame.py is the definition: a build that disagrees with it is never used
        UNAVAILABLE = (f"the compiled ingest path disagrees with firmware/frame.py ({_fastpath.LAYOUT}); "
                       "run scripts/setup.sh to rebuild it")
        _fastpath = None
    else:
        UNAVAILABLE = None

AVAILABLE = _fastpath is not None


class CompiledPathUnavailable(VigilBackendError):
    """The compiled ingest path was asked for and is not built (the message says how to build it)."""


def module():
    """The compiled module; raises CompiledPathUnavailable when it is not here."""
    if _fastpath is None:
        raise CompiledPathUnavailable(UNAVAILABLE)
    return _fastpath


def replay_window(window: int = F.REPLAY_WINDOW, highest: int = -1):
    """A new replay window: the compiled ``ReplayWindow`` when built, else the reference
    ``firmware.frame.ReplayGuard`` (the same methods and results: tests/backend/test_fastpath.py)."""
    if _fastpath is None:
        return F.ReplayGuard(window, highest)
    return _fastpath.ReplayWindow(window, highest)
