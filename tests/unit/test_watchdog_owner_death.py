"""The serving watchdog (serving/watchdog.py, launch.Watchdog) without the model server: an owner
process guards a child process group the way `serve` guards MMS; when the owner is SIGKILLed the
watchdog stops the group (SIGKILL after a grace period if SIGTERM is ignored) and removes the work
dir; after a clean `release()` it touches nothing. The same with the real MMS:
tests/server/test_hardening.py::test_kill_9_of_serve_leaves_no_java_no_worker_no_port_and_no_temp_dir."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

OWNER = textwrap.dedent("""
    import subprocess, sys, time
    from clip_search.serving.launch import Watchdog
    workdir, ignore_term, release = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
    child_code = ("import signal, time\\n"
                  + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n" if ignore_term else "")
                  + "print('up', flush=True)\\ntime.sleep(120)")
    watchdog = Watchdog(workdir)
    child = subprocess.Popen([sys.executable, "-c", child_code], start_new_session=True, stdout=subprocess.PIPE)
    assert child.stdout.readline().strip() == b"up"  # its SIGTERM handler is in place
    watchdog.guard(child)
    if release:
        watchdog.release()
    print(child.pid, watchdog.process.pid, flush=True)
    time.sleep(120)
""")


def start_owner(workdir, ignore_term=False, release=False):
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(workdir), str(int(ignore_term)), str(int(release))],
                             stdout=subprocess.PIPE, text=True)
    child_pid, watchdog_pid = (int(word) for word in owner.stdout.readline().split())
    return owner, psutil.Process(child_pid), watchdog_pid


def gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not gone(pid):
        time.sleep(0.05)
    return gone(pid)


@pytest.fixture
def cleanup():
    pids = []
    yield pids
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.mark.parametrize("ignore_term", [False, True], ids=["honours-sigterm", "ignores-sigterm"])
def test_owner_killed_stops_the_group_and_removes_the_workdir(tmp_path, cleanup, ignore_term):
    workdir = tmp_path / "clip-search-serve-x"
    workdir.mkdir()
    (workdir / "logs").mkdir()
    owner, child, watchdog_pid = start_owner(workdir, ignore_term=ignore_term)
    cleanup.append(child.pid)
    assert child.is_running() and not gone(watchdog_pid)
    start = time.monotonic()
    owner.kill()  # SIGKILL: the owner runs no cleanup of its own
    owner.wait(10)
    # SIGTERM first; a group that ignores it gets SIGKILL after the 5 s grace.
    assert wait_gone(child.pid, 15), "the watchdog did not stop the child's group"
    stopped_after = time.monotonic() - start
    assert (stopped_after >= 4.5) if ignore_term else (stopped_after < 4.5), stopped_after
    assert wait_gone(watchdog_pid, 10)
    assert not workdir.exists()


def test_after_release_the_watchdog_exits_and_touches_nothing(tmp_path, cleanup):
    workdir = tmp_path / "clip-search-serve-y"
    workdir.mkdir()
    owner, child, watchdog_pid = start_owner(workdir, release=True)
    cleanup.append(child.pid)
    assert wait_gone(watchdog_pid, 10)  # released: it exits at once
    owner.kill()
    owner.wait(10)
    time.sleep(0.5)
    assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    assert workdir.is_dir()
