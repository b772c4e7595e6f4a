"""``mason.cli.main.run``, the ``mason`` command: the process ends without the interpreter's
teardown, after doing what that teardown would do for mason (threads joined, exit handlers
run, output flushed) and with ``main``'s exit status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_FAKE_MAIN = """
import atexit, sys, threading, time
from mason.cli import main as cli_main

out = sys.argv[1]

def fake_main():
    def late():
        time.sleep(0.3)
        open(out + "/thread", "w").write("finished")
    threading.Thread(target=late).start()
    atexit.register(lambda: open(out + "/atexit", "w").write("ran"))
    sys.stdout.write("the last words, no newline")
    sys.stderr.write("on stderr too")
    return 3

cli_main.main = fake_main
cli_main.run()
print("never here")
"""


def test_run_ends_the_process_as_the_interpreter_would_with_mains_status(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _FAKE_MAIN, str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 3
    assert done.stdout == "the last words, no newline"  # a pipe's buffer, flushed
    assert done.stderr == "on stderr too"
    assert (tmp_path / "thread").read_text() == "finished"  # not cut short
    assert (tmp_path / "atexit").read_text() == "ran"


_DASH_M = """
import runpy, sys

class Witness:
    def __del__(self):
        sys.stderr.write("module teardown ran")

witness = Witness()  # cleared, so finalised, only by the interpreter's teardown
sys.argv = ["mason"]
runpy.run_module("mason.cli.main", run_name="__main__")
"""


def test_python_dash_m_runs_the_command_through_run() -> None:
    done = subprocess.run([sys.executable, "-c", _DASH_M], capture_output=True, text=True)
    assert done.returncode == 2  # main's status for no command
    assert done.stdout.startswith("usage: mason") and done.stdout.endswith("\n")
    assert "module teardown ran" not in done.stderr  # os._exit, not sys.exit
