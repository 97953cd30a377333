"""Running the command-line tools from a notebook cell, with their output streamed into it."""
import os
import shlex
import subprocess
import sys
from collections import deque
from typing import Optional, Sequence

__all__ = ["run", "CommandFailed"]


class CommandFailed(RuntimeError):
    """A command run by :func:`run` exited with an error; the message holds its last lines."""


def run(args: Sequence, cwd: Optional[str] = None, tail_lines: int = 40) -> None:
    """Run ``python <args>`` and stream its output into the notebook.

    Raises:
        CommandFailed: on a non-zero exit, with the command and its last output lines, so the
            notebook cell fails where the problem is instead of going on with missing files.
    """
    cmd = [sys.executable, *map(str, args)]
    print("$ python " + " ".join(shlex.quote(a) for a in cmd[1:]), flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    tail = deque(maxlen=tail_lines)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    try:
        for line in proc.stdout:
            print(line, end="", flush=True)
            tail.append(line)
        code = proc.wait()
    except BaseException:  # an interrupted cell must not leave a training process holding the GPU
        proc.kill()
        proc.wait()
        raise
    if code != 0:
        raise CommandFailed(
            f"`python {' '.join(map(str, args))}` exited with code {code}. Its last lines:\n"
            + "".join(tail)
        )
