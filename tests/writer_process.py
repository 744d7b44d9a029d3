"""A writer in another process, started once per test and driven many times (issue 25).

The freshness tests need writes made by another process: the reader (a `SearchClient`, the app)
must notice commits it did not make. A new interpreter per write only repeats the start-up (Python,
numpy, LanceDB, the CLI's imports: seconds each under coverage) without testing anything more, so
a test starts one `Writer` and sends it commands on stdin, one JSON line each:

- `{"cli": [ARGS...], "env": {...}}` runs `clip-search ARGS` (the CLI's own code, `main`, with its
  exit status, stdout and stderr), the settings variables of `env` set for that command only;
- `{"write": "upsert" | "delete", "location": ..., "payload": ..., "env": {...}}` opens the index with
  `open_index`, upserts or deletes, refreshes and closes it, as a writer process would.

Every command opens and closes its own index, so each write is a whole write of its own, committed
before the answer comes back; the answer is one line starting with MARK (other output of the process,
e.g. a native library's logging, is passed over). Tests that kill a writer with -9, or that need two
writers at once, still start processes of their own.
"""
import contextlib
import io
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from unittest import mock

MARK = "@@clip-search-writer@@ "
REPO = Path(__file__).resolve().parents[1]


def environment(**extra) -> dict:
    """This process's environment (moto's variables included) with the repository's code first."""
    path = os.pathsep.join([str(REPO / "code"), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **{key: str(value) for key, value in extra.items()}}


class Done:
    """What one command did, shaped like subprocess.CompletedProcess."""

    def __init__(self, args, returncode: int, stdout: str, stderr: str):
        self.args, self.returncode, self.stdout, self.stderr = args, returncode, stdout, stderr


class Writer:
    """One long-lived writer process. `preload` names modules it imports at once, while the test
    sets up (so its first command costs what the later ones do)."""

    def __init__(self, preload=(), timeout: float = 300, **env):
        self.timeout = timeout
        self.process = subprocess.Popen([sys.executable, "-m", "tests.writer_process", *preload],
                                        env=environment(**env), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, bufsize=1)
        self._answers: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            if line.startswith(MARK):
                self._answers.put(json.loads(line[len(MARK):]))
        self._answers.put(None)  # the process ended

    def _ask(self, command: dict) -> dict:
        try:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # it died: said below
        try:
            answer = self._answers.get(timeout=self.timeout)
        except queue.Empty:
            raise AssertionError(f"the writer process did not answer {command} within {self.timeout} s") from None
        assert answer is not None, f"the writer process ended (status {self.process.wait(30)}) on {command}"
        return answer

    def cli(self, *args, check: bool = True, **env) -> Done:
        """`clip-search ARGS` in the writer process, to completion; with `check`, a failure fails the test."""
        args = [str(arg) for arg in args]
        answer = self._ask({"cli": args, "env": {key: str(value) for key, value in env.items()}})
        done = Done(args, answer["returncode"], answer["stdout"], answer["stderr"])
        assert not check or done.returncode == 0, f"clip-search {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done

    def write(self, location: str, action: str, payload, **env) -> str:
        """An upsert or delete through `open_index` in the writer process; -> what it printed."""
        answer = self._ask({"write": action, "location": str(location), "payload": payload,
                            "env": {key: str(value) for key, value in env.items()}})
        assert answer["returncode"] == 0, answer["stderr"]
        return answer["stdout"]

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()  # end of commands: the process exits (and coverage saves its data)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- the writer process ---------------------------------------------------------------------------
def _index_write(action: str, location: str, payload):
    import numpy as np

    from clip_search.search.index import open_index
    from clip_search.search.records import EmbeddedProduct, Product

    index = open_index(location, **({"initial_backoff": 0.01} if location.startswith("http") else {}))
    try:
        if action == "upsert":
            index.ensure(len(payload[0].get("image") or payload[0]["title_vector"]), "m")
            index.upsert([EmbeddedProduct(Product(p["id"], p["title"], None, {}),
                                          None if p.get("image") is None else np.asarray(p["image"], np.float32),
                                          None if p.get("title_vector") is None else np.asarray(p["title_vector"], np.float32))
                          for p in payload])
            index.refresh()
        else:
            print(index.delete(payload))
    finally:
        index.close()


def _run(command: dict) -> dict:
    out, err = io.StringIO(), io.StringIO()
    returncode = 0
    with mock.patch.dict(os.environ, command.get("env", {})):
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                if "cli" in command:
                    from clip_search.cli import main

                    main.main(command["cli"], prog_name="clip-search", standalone_mode=True)
                else:
                    _index_write(command["write"], command["location"], command["payload"])
            except SystemExit as exit_:
                returncode = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            except BaseException:  # noqa: BLE001 - a failed write is an answer, not the end of the writer
                import traceback

                traceback.print_exc()
                returncode = 1
    return {"returncode": returncode, "stdout": out.getvalue(), "stderr": err.getvalue()}


def serve(preload) -> None:
    import importlib

    for module in preload:
        importlib.import_module(module)
    answers = sys.stdout
    for line in sys.stdin:
        if line.strip():
            answers.write(MARK + json.dumps(_run(json.loads(line))) + "\n")
            answers.flush()


if __name__ == "__main__":
    serve(sys.argv[1:])
