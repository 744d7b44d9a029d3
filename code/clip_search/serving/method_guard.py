"""405 for methods other than POST on /invocations, answered inside multi-model-server's Java front end.

MMS 1.1.11 forwards GET, PUT, DELETE, ... on /invocations to the Python worker exactly like POST:
`InferenceRequestHandler.parseRequest` copies the query parameters, headers and body into the
worker's `RequestInput`, never the method, so our handler cannot tell (GET answered 415, PUT 200).
What was checked and why the other ways do not work is in docs/hardening.md.

The rule therefore lives in the first handler of MMS's request chain: `mms_guard/
ApiDescriptionRequestHandler.java` is MMS's own class of that name (API description on
`OPTIONS /` and `/api-description`) plus "any method but POST on /invocations gets 405 and our JSON
error". It is compiled with javac against the installed model-server.jar (`build`), and `install`
puts it in the launch workdir, which is MMS's working directory: MMS's class path starts with
".", so the JVM loads it before the jar's copy. It is installed only over the exact MMS class it
was written against (SHA-256 below); another MMS version keeps its own class, with a warning.

The compiled class comes from the package (container/Dockerfile compiles it in a JDK stage: the
image's runtime has no compiler), or is built once per source and jar into ~/.cache/clip-search
when a JDK's javac is on the PATH (a native install, CI).
"""
import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import tempfile
import zipfile
from importlib import resources
from pathlib import Path

logger = logging.getLogger(__name__)

CLASS_NAME = "com.amazonaws.ml.mms.http.ApiDescriptionRequestHandler"
CLASS_PATH = CLASS_NAME.replace(".", "/") + ".class"
SOURCE = "ApiDescriptionRequestHandler.java"
PACKAGE_DIR = "mms_guard"  # package data: the source, and the compiled class in a built image
# MMS 1.1.11's model-server.jar entry that the guard replaces; another one means another MMS.
REPLACED_SHA256 = "78fdf703c415eff394533584b4e8dd4fe2f403e61b63fef432e74860e8aeda86"
JAVA_RELEASE = "8"  # the class file version of MMS's own classes (major 52)


class GuardError(RuntimeError):
    pass


def mms_jar() -> Path:
    spec = importlib.util.find_spec("mms")
    if spec is None or spec.origin is None:
        raise GuardError("multi-model-server is not installed (pip install 'clip-search[serve]')")
    return Path(spec.origin).parent / "frontend" / "model-server.jar"


def replaced_sha256(jar: Path) -> str | None:
    """SHA-256 of the jar's own copy of the class the guard replaces (None if it has none)."""
    try:
        with zipfile.ZipFile(jar) as archive:
            return hashlib.sha256(archive.read(CLASS_PATH)).hexdigest()
    except (OSError, KeyError, zipfile.BadZipFile):
        return None


def _package_file(name: str):
    return resources.files("clip_search.serving").joinpath(PACKAGE_DIR, name)


def _source_bytes() -> bytes:
    return _package_file(SOURCE).read_bytes()


def _javac() -> str | None:
    return shutil.which("javac")


def build(dest_dir: Path, jar: Path | None = None, javac: str | None = None) -> Path:
    """Compile the guard against `jar` into `dest_dir` (atomically); returns the class file."""
    jar = jar or mms_jar()
    javac = javac or _javac()
    if javac is None:
        raise GuardError("javac not found on the PATH: install a JDK (e.g. openjdk-17-jdk-headless)")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir) as scratch:
        source = Path(scratch) / SOURCE
        source.write_bytes(_source_bytes())
        result = subprocess.run(
            [javac, "--release", JAVA_RELEASE, "-nowarn", "-encoding", "UTF-8", "-cp", str(jar),
             "-d", str(Path(scratch) / "classes"), str(source)],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise GuardError(f"javac failed on {SOURCE}: {result.stderr.strip()}")
        target = dest_dir / Path(CLASS_PATH).name
        os.replace(Path(scratch) / "classes" / CLASS_PATH, target)
    return target


def _cache_dir(jar_class_sha: str) -> Path:
    key = hashlib.sha256(_source_bytes() + jar_class_sha.encode() + JAVA_RELEASE.encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "clip-search" / "mms-guard" / key


def compiled_class(jar: Path) -> Path | None:
    """The guard's class file: packaged, cached, or compiled now; None if there is no way to."""
    packaged = _package_file(Path(CLASS_PATH).name)
    if packaged.is_file():
        return Path(str(packaged))
    cached = _cache_dir(REPLACED_SHA256) / Path(CLASS_PATH).name
    if cached.is_file():
        return cached
    if _javac() is None:
        return None
    return build(cached.parent, jar)


def install(workdir: Path, jar: Path | None = None) -> bool:
    """Put the guard on MMS's class path in `workdir` (MMS's working directory); True if it is.

    Never stops a start: without it, methods other than POST reach the handler as before.
    """
    try:
        jar = jar or mms_jar()
        found = replaced_sha256(jar)
        if found != REPLACED_SHA256:
            logger.warning("%s in %s is not the multi-model-server 1.1.11 class the method guard was "
                           "written against (sha256 %s): GET/PUT/... on /invocations are answered like "
                           "POST", CLASS_NAME, jar, found)
            return False
        compiled = compiled_class(jar)
        if compiled is None:
            logger.warning("no compiled method guard and no javac to build it: GET/PUT/... on "
                           "/invocations are answered like POST (install a JDK, or use the image)")
            return False
    except (GuardError, OSError) as error:
        logger.warning("method guard not installed: %s", error)
        return False
    target = Path(workdir) / CLASS_PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(compiled, target)
    return True
