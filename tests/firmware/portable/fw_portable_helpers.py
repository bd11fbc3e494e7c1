# Helpers for the portable firmware tests: the same test modules run under pytest (CPython)
# and under genuine MicroPython (firmware/tools/mprun.mjs + mp_driver.py), so they use only
# what both offer: no pytest, no pathlib, no os.path.
import json
import os

_counter = [0]


def raises(exc_type, fn, *args, **kwargs):
    """Call fn and return the exception of exc_type it raised; fail if it raised none."""
    try:
        fn(*args, **kwargs)
    except exc_type as exc:
        return exc
    raise AssertionError("%s not raised" % exc_type.__name__)


def repo_root():
    parts = __file__.replace("\\", "/").split("/")
    return "/".join(parts[:-4]) or "/"


def read_json(relpath):
    with open(repo_root() + "/" + relpath) as f:
        return json.load(f)


def fresh_dir():
    """An empty directory for a test's files (config store)."""
    try:
        import tempfile

        return tempfile.mkdtemp(prefix="vigil-fw-")
    except ImportError:  # MicroPython: the in-memory file system
        _counter[0] += 1
        path = "/tmp/vigil-fw-%d" % _counter[0]
        try:
            os.mkdir("/tmp")
        except OSError:
            pass
        os.mkdir(path)
        return path


class MemoryStore:
    """Stands in for the flash writes of a sequence reservation; can be told to fail."""

    def __init__(self, limit=0):
        self.limit = limit
        self.writes = 0
        self.fail = False

    def persist(self, limit):
        if self.fail:
            raise OSError(28, "no space")
        self.limit = limit
        self.writes += 1
