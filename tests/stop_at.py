"""`python -m tests.stop_at ARGS`: the threadline command with ARGS, which stops itself
(SIGSTOP) at the first audit event named in THREADLINE_STOP_AT ("event regex", or
"event#N regex" for the Nth) whose arguments match the regex: a breakpoint at an exact
step, where a test kills it.
Nothing of the command is replaced; the hook only pauses it."""

from __future__ import annotations

import os
import re
import runpy
import signal
import sys
import threading

# Taken out: the environment of a process it starts is among the arguments matched.
WANTED, _, PATTERN = os.environ.pop("THREADLINE_STOP_AT").partition(" ")
EVENT, _, NTH = WANTED.partition("#")
ARGUMENTS = re.compile(PATTERN)
left = int(NTH or 1)


def stop(event: str, arguments: tuple[object, ...]) -> None:
    global left
    if event == EVENT and ARGUMENTS.search(repr(arguments)):
        left -= 1
        if left == 0:
            # To this thread: stopped before it returns (sent to the process, another
            # thread could take it while this one goes on with the step).
            signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)


if __name__ == "__main__":
    sys.addaudithook(stop)
    runpy.run_module("threadline", run_name="__main__", alter_sys=True)
