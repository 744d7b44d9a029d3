"""Waiting for processes to end: a condition with a deadline instead of a fixed sleep."""
import time

import psutil


def still_running(processes: list[psutil.Process], timeout: float = 30) -> list[psutil.Process]:
    """The processes still running (zombies count as ended) once all have ended or `timeout` s passed."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for process in processes:
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)
