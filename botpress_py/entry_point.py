"""The ``botpress-py`` command's entry point (and ``python -m botpress_py``'s): Ctrl+C at any moment ends it
quietly, with status 130.

It imports nothing of botpress-py before it can catch Ctrl+C: the command line (cli.py) imports the
server's parts and loads modules before a verb runs, which takes a good part of a second, and a
KeyboardInterrupt there would otherwise print a traceback. Once the verb is over, a second Ctrl+C
(while the interpreter waits for threads to end) stops the process at once, as the system does,
with no traceback either.
"""

from __future__ import annotations

import signal
import sys


def main() -> int:
    try:
        from .cli import main as run_command

        status: int | None = run_command()
    except KeyboardInterrupt:
        status = None
    # The verb is over: from here Ctrl+C ends the process as the system does, without Python's traceback.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if status is None:
        print(file=sys.stderr)  # the shell's prompt on a line of its own, after the ^C
        return 130
    return status
