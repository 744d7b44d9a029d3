"""`clip-search app` as a user runs it: a real process, the URL it prints, Ctrl-C / SIGTERM to stop."""
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
URL_LINE = re.compile(r"clip-search app: (http://[^/\s]+)/")


def start_app(*args, env=None, command="app", timeout=120):
    """Start `clip-search COMMAND ARGS`; -> (process, the app's URL it printed, stdout lines so far)."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "code"), str(REPO)]), **(env or {})}
    process = subprocess.Popen([sys.executable, "-m", "clip_search.cli", command, *map(str, args)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    lines: list[str] = []
    found = threading.Event()

    def read():
        for line in process.stdout:
            lines.append(line)
            if URL_LINE.search(line):
                found.set()

    errors: list[str] = []
    # stderr drained too: a child that logs a lot (the demo's model server) must never block on a full pipe
    readers = [threading.Thread(target=read, daemon=True),
               threading.Thread(target=lambda: errors.extend(process.stderr), daemon=True)]
    for reader in readers:
        reader.start()
    process.errors, process.readers = errors, readers
    deadline = time.monotonic() + timeout
    while not found.is_set():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            time.sleep(0.5)
            pytest.fail(f"clip-search {command} did not print its URL: {''.join(lines)}{''.join(errors)[-5000:]}")
        time.sleep(0.05)
    return process, URL_LINE.search("".join(lines)).group(1), lines


@pytest.mark.parametrize("stop, explicit_model", [(signal.SIGINT, False), (signal.SIGTERM, True)], ids=["sigint", "sigterm-model"])
def test_app_serves_and_stops_cleanly(demo_index, library_client, test_model_dir, stop, explicit_model):
    """Without --model the app encodes with what the index recorded (as `clip-search search`)."""
    model = ("--model", test_model_dir) if explicit_model else ()
    process, url, lines = start_app("--index", demo_index, *model, "--port", 0)
    try:
        assert url.startswith("http://127.0.0.1:")  # loopback by default
        assert requests.get(url + "/healthz", timeout=30).json()["model"] == "clip-search-tiny/random"
        hits = requests.get(url + "/api/search", params={"q": "orange juice", "k": 3}, timeout=30).json()["hits"]
        assert [h["id"] for h in hits] == [h.id for h in library_client.search_text("orange juice", k=3)]
        assert requests.get(url + "/", timeout=30).headers["content-type"].startswith("text/html")
    finally:
        process.send_signal(stop)
        code = process.wait(30)
    for reader in process.readers:
        reader.join(10)
    assert code == 0, "".join(process.errors)[-3000:]
    assert "stopped" in "".join(lines)


def run_cli(*args):
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "code"), str(REPO)])}
    return subprocess.run([sys.executable, "-m", "clip_search.cli", "app", *map(str, args)], capture_output=True,
                          text=True, env=environment, timeout=120)


def test_app_errors_are_one_line(tmp_path, demo_index, test_model_dir):
    missing = run_cli("--index", tmp_path / "no-index")
    assert missing.returncode == 1 and "Error: no index at" in missing.stderr and "Traceback" not in missing.stderr
    both = run_cli("--index", demo_index, "--model", test_model_dir, "--endpoint", "http://127.0.0.1:9")
    assert both.returncode == 2 and "not both" in both.stderr
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = run_cli("--index", demo_index, "--port", taken.getsockname()[1])
    assert busy.returncode == 1 and "cannot listen on 127.0.0.1" in busy.stderr and "Traceback" not in busy.stderr
