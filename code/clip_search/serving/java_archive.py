"""Build time (container/Dockerfile): MMS's front end classes in the JVM's class data archive (CDS).

    python -m clip_search.serving.java_archive

At every start the Java front end loads ~3,700 classes (JDK, netty, log4j2, gson, MMS), MMS's from its jar:
parsed, verified and linked, ~0.4 s of the ~1 s of CPU the JVM spends before the first embedding,
on the cold start's critical path (the JVM spawns the Python worker only once it is up). Here MMS
runs once with a stand-in handler through one /ping and one /invocations under
`-XX:DumpLoadedClassList`, and those classes are dumped into the JVM's default archive
(`$JAVA_HOME/lib/server/classes.jsa`), which the JVM maps at start with no flag at all.

The JVM takes application classes from the archive only where its class path matches the one dumped
with, and every directory on it is empty: MMS's launcher puts "." first, so the front end runs in
an empty directory (`mms.java_cwd`) at build time and at run time alike. Where the class path does
not match (another MMS version, another java), the JVM silently loads from the jar as before.
"""
import os
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
    """The class path MMS's launcher (mms/model_server.py) gives the JVM."""
    import mms as mms_package

    home = Path(mms_package.__file__).resolve().parent.parent
    return ".:" + os.path.join(str(home), "mms/frontend/*")


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    return os.path.join(home, "bin", "java") if home else "java"


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
    process = subprocess.Popen(mms.command(config, model_dir), env=env, cwd=mms.java_cwd(workdir),
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


def dump(class_list: Path, archive: Path, empty_dir: Path) -> None:
    """The JVM's static archive of the classes in `class_list` (the JDK's and MMS's that MMS loaded)."""
    subprocess.run([java(), "-Xshare:dump", f"-XX:SharedClassListFile={class_list}",
                    f"-XX:SharedArchiveFile={archive}", "-XX:+UseSerialGC", "-cp", class_path()],
                   cwd=empty_dir, check=True, stdout=subprocess.DEVNULL)
    # The archive must map, application classes included, from the directory MMS runs in.
    subprocess.run([java(), "-Xshare:on", "-cp", class_path(), "-version"], cwd=empty_dir, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    archive = Path(java()).resolve().parent.parent / "lib" / "server" / "classes.jsa"
    with tempfile.TemporaryDirectory(prefix="clip-search-cds-") as tmp:
        workdir = Path(tmp)
        class_list = workdir / "classes.lst"
        record_classes(workdir, class_list)
        count = sum(1 for line in class_list.read_text().splitlines() if line and not line.startswith("#"))
        dump(class_list, archive, mms.java_cwd(workdir / "dump"))
    print(f"{archive}: the {count} classes MMS loaded", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
