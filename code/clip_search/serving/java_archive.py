"""Build time (container/Dockerfile): MMS's front end classes in the JVM's class data archive (CDS).

    python -m clip_search.serving.java_archive

At every start MMS's Java front end loads ~3,700 classes (JDK, netty, log4j2, gson, MMS), MMS's from its jar:
parsed, verified and linked, ~0.4 s of the ~1 s of CPU the JVM spends before the first embedding,
on the cold start's critical path (the JVM spawns the Python worker only once it is up). Here MMS
runs once with a stand-in handler through one /ping and one /invocations under
`-XX:DumpLoadedClassList`, and those classes are dumped into the JVM's default archive
(`$JAVA_HOME/lib/server/classes.jsa`), which the JVM maps at start with no flag at all.

The JVM takes application classes from the archive only where its class path matches the one dumped
with (the same jars, unchanged) and no directory on it has files: `mms.class_path` is MMS's jars
only, the same here and at every start. Where it does not match (another
MMS version, another java), the JVM silently loads from the jars as before.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from clip_search import settings
from clip_search.serving import mms
from clip_search.serving.launch import stop_group
from clip_search.serving.server import free_port

HANDLER_MODULE = "clip_search_cds_warmup"
HANDLER_SOURCE = '''"""Stand-in handler: MMS's request path without a model (clip_search.serving.java_archive)."""


def handle(data, context):
    return None if data is None else [b'{"embeddings": [[1.0]]}' for _ in data]
'''


def class_path() -> str:
    """The class path every start gives the JVM (serving/launch.py)."""
    return mms.class_path()


def record_classes(workdir: Path, class_list: Path, timeout: float = 180) -> None:
    """Run MMS with the stand-in handler until it has answered /ping and /invocations once."""
    model_dir = workdir / "model"
    model_dir.mkdir()
    (model_dir / f"{HANDLER_MODULE}.py").write_text(HANDLER_SOURCE)
    port = free_port()
    address = f"http://127.0.0.1:{port}"
    os.environ["SAGEMAKER_MODEL_SERVER_VMARGS"] = f"{settings.current().vmargs} -XX:DumpLoadedClassList={class_list}"
    (workdir / "logs").mkdir()
    config = mms.write_config(workdir, address, address, handler=HANDLER_MODULE)
    env = mms.worker_environment(workdir)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(model_dir), env.get("PYTHONPATH")]))
    process = subprocess.Popen(mms.command(config, model_dir, env=env),
                               env=env, cwd=workdir,
                               stdout=sys.stderr, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{address}/ping", timeout=5).read()
                answer = urllib.request.urlopen(urllib.request.Request(
                    f"{address}/invocations", data=b"warm up", headers={"Content-Type": "text/plain"}), timeout=5)
                if answer.status == 200:
                    return
            except (urllib.error.URLError, OSError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"MMS did not answer the warm-up request (exit status {process.poll()})")
            time.sleep(0.2)
    finally:
        stop_group(process)


def dump(class_list: Path, archive: Path, workdir: Path) -> None:
    """The JVM's static archive of the classes in `class_list` (the JDK's and MMS's that MMS loaded)."""
    java = mms.java()
    subprocess.run([java, "-Xshare:dump", f"-XX:SharedClassListFile={class_list}",
                    f"-XX:SharedArchiveFile={archive}", "-XX:+UseSerialGC", "-cp", class_path()],
                   cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    # The archive must map, application classes included, with the class path MMS runs with.
    subprocess.run([java, "-Xshare:on", "-cp", class_path(), "-version"], cwd=workdir, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    archive = Path(shutil.which(mms.java()) or mms.java()).resolve().parent.parent / "lib" / "server" / "classes.jsa"
    with tempfile.TemporaryDirectory(prefix="clip-search-cds-") as tmp:
        workdir = Path(tmp)
        class_list = workdir / "classes.lst"
        record_classes(workdir, class_list)
        count = sum(1 for line in class_list.read_text().splitlines() if line and not line.startswith("#"))
        dump(class_list, archive, workdir)
    print(f"{archive}: the {count} classes MMS loaded", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
