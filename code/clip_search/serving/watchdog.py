"""A tiny supervisor: when the process that started the model server is gone, however it ended
(kill -9 included), stop the server's process group and remove its temp dir.

PR_SET_PDEATHSIG would only reach the direct child, and MMS re-parents its Java front end, so the
watch is on a pipe instead: the owner keeps the write end open; the kernel closes it when the owner
dies. The owner first writes the process group to kill; a clean stop writes "stopped" (nothing to
do). Standard library only: it starts in a fraction of a second and imports nothing of ours.

    python -m clip_search.serving.watchdog READ_FD WORKDIR
"""
import os
import shutil
import signal
import sys
import time


def _kill_group(pgid: int, grace: float = 5.0) -> None:
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, signum)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.1)


def main(argv: list[str]) -> int:
    read_fd, workdir = int(argv[0]), argv[1]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the owner's to handle
    pgid, stopped = None, False
    with os.fdopen(read_fd, "rb") as pipe:
        for line in pipe:  # ends at EOF: the owner closed the pipe or died
            word = line.strip()
            if word == b"stopped":
                stopped = True
            elif word.isdigit():
                pgid = int(word)
    if not stopped:
        if pgid is not None:
            _kill_group(pgid)
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
