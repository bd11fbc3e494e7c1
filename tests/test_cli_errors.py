"""No `vigil` command answers a person's mistake with a traceback or Python's words (issue 21:
"invalid <lambda> value", "invalid literal for int() with base 0", FileNotFoundError and
BrokenPipeError tracebacks). Every argument of every subcommand, walked from the real parser,
is given values its type refuses; data that is not there and a database that is missing or not
running are one line each. (The backend's refusals and 422s in words, `vigil login` and `vigil
officer list | head -3` against a real backend: tests/backend/test_api_cli.py.)"""
from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from backend import cli
from backend.local import infra

NOT_PYTHON = ("<lambda>", "base 0", "invalid literal", "Traceback", "Error:")


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, child in action.choices.items():
            yield from _leaves(child, path + (name,))


def _typed_arguments():
    for path, parser in _leaves(cli.build_parser()):
        for action in parser._actions:
            if action.type in (None, str) or action.nargs == 0 or getattr(action.type, "__name__", "") == "Path":
                continue
            yield path, (action.option_strings[0] if action.option_strings else None), action


TYPED = list(_typed_arguments())


def _run(argv, monkeypatch=None) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:
            code = exc.code
    return code, err.getvalue()


def test_the_walk_finds_the_typed_arguments():
    names = {(" ".join(path), option) for path, option, _ in TYPED}
    assert ("device retire", None) in names and ("simulate", "--first-device-id") in names
    assert ("dashboard screenshots", "--officers") in names and len(TYPED) > 40, len(TYPED)


@pytest.mark.parametrize("value", ["zz", "0x", "1.5.2", ""])
def test_a_value_its_type_refuses_is_one_line_in_words(value):
    for path, option, action in TYPED:
        argv = [*path, *([option, value] if option else [value])]
        code, err = _run(argv)
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))]
        assert code == 2 and len(lines) == 1, (argv, err)
        assert not any(word in err for word in NOT_PYTHON), (argv, err)
        assert (option or action.dest) in lines[0], (argv, lines[0])  # it names the argument


@pytest.mark.parametrize("what", ["hr", "falls"])
def test_data_that_is_not_there_is_one_line(what, tmp_path):
    code, err = _run(["eval", what, "--data", str(tmp_path / "nonexistent"), "--out", str(tmp_path / "out")])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "check the path" in lines[0], err
    assert not any(word in err for word in NOT_PYTHON), err


def test_a_missing_or_stopped_database_is_one_line(monkeypatch, pg_server):
    base = pg_server.replace("postgresql://", "postgresql+asyncpg://")
    for url, said in ((f"{base}/vigil_no_such_database", 'database "vigil_no_such_database" does not exist'),
                      (f"postgresql+asyncpg://postgres@127.0.0.1:{infra.free_port()}/vigil", "is the service running?")):
        monkeypatch.setenv("VIGIL_DATABASE_URL", url)
        code, err = _run(["audit", "verify"])
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 1 and len(lines) == 1 and said in lines[0], err
        assert "VIGIL_DATABASE_URL" in lines[0] and not any(word in err for word in NOT_PYTHON), err
