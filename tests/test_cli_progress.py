"""Progress bars (issue 21: "progress bars on long work from a maintained library"): rich draws
them on stderr when it is a terminal (a real pseudo-terminal here), never when stderr is a pipe
or with `vigil --quiet`; stdout keeps only the results. The evaluations' loops use it."""
from __future__ import annotations

import os
import select
import subprocess
import sys

from backend.evaluation.datasets import console_progress
from backend.cli.progress import Bar

DRIVE = ("import sys; from backend.cli import main, progress;"
         "sys.argv[1:] and progress.set_quiet(True);"
         "from backend.evaluation.datasets import console_progress;"
         "bar = console_progress('loading recordings');"
         "[bar(i, 5, f'DATA_{i:02d}') for i in range(6)]; print('result')")


def _run_on_a_terminal(*argv: str) -> tuple[str, str]:
    """stdout through a pipe, stderr on a pseudo-terminal (as a person's shell has it)."""
    master, slave = os.openpty()
    done = subprocess.run([sys.executable, "-c", DRIVE, *argv], stdout=subprocess.PIPE, stderr=slave,
                          env={**os.environ, "COLUMNS": "100", "VIGIL_QUIET": ""}, timeout=60)
    os.close(slave)
    seen = b""
    while select.select([master], [], [], 0.5)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert done.returncode == 0
    return done.stdout.decode(), seen.decode(errors="replace")


def test_a_bar_on_a_terminal_and_nothing_on_stdout():
    out, err = _run_on_a_terminal()
    assert out == "result\n"
    assert "loading recordings" in err and "5/5" in err, err
    assert "━" in err, err  # rich's bar itself, not a line of text


def test_quiet_draws_nothing():
    out, err = _run_on_a_terminal("--quiet")
    assert out == "result\n" and err == "", err


def test_no_bar_when_stderr_is_not_a_terminal(capfd):
    bar = console_progress("loading recordings")
    assert isinstance(bar, Bar)
    for i in range(6):
        bar(i, 5, f"DATA_{i:02d}")
    assert capfd.readouterr().err == ""
