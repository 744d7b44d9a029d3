"""Two answers of multi-model-server's Java front end made ours: 405 for methods other than POST on
/invocations, and the JSON 413 for a body over MMS's own request limit.

MMS 1.1.11 forwards GET, PUT, DELETE, ... on /invocations to the Python worker exactly like POST:
`InferenceRequestHandler.parseRequest` copies the query parameters, headers and body into the
worker's `RequestInput`, never the method, so our handler cannot tell (GET answered 415, PUT 200).
And Netty's `HttpObjectAggregator` refuses a body over `max_request_size` with a 413 without a body.
What was checked, and why MMS's plugin SDK cannot do it, is in docs/hardening.md.

`java/ServerInitializer.java` is MMS's channel initializer building MMS's own pipeline, with an
aggregator whose 413 is `{"error", "status"}` and, on inference connectors, a handler that answers
any method but POST on /invocations with a JSON 405 before the request reaches MMS's chain. It is
compiled with javac against the installed model-server.jar into a jar of their own (`build`), which
`front_end_jar` hands to the launch: `mms.class_path` puts it ahead of MMS's jars, so the JVM loads
our ServerInitializer before the jar's own. (A jar, not a class directory: the JVM maps its class
data archive only where no class path directory has files.) It is compiled only against the exact MMS class it was
written against (SHA-256 below; a unit test checks the pinned jar has it) and installed only
with that MMS version; another one keeps its own class, with a warning. (The start
checks the version, not the hash: parsing the 7.5 MB jar's directory took 60-90 ms.)

The jar comes from the package (container/Dockerfile compiles it in a JDK stage: the image's
runtime has no compiler), or is built once per source and MMS jar into ~/.cache/clip-search when a
JDK's javac is on the PATH (a native install, CI).
"""
import hashlib
import importlib.metadata
import importlib.util
import logging
import shutil
import subprocess
import tempfile
import zipfile
from importlib import resources
from pathlib import Path

logger = logging.getLogger(__name__)

CLASS_NAME = "com.amazonaws.ml.mms.ServerInitializer"
CLASS_PATH = CLASS_NAME.replace(".", "/") + ".class"
SOURCE = "ServerInitializer.java"
JAVA_DIR = "java"  # package data: the source, and in a built image the compiled jar
JAR = "front-end.jar"
# MMS 1.1.11's model-server.jar entry that ServerInitializer.java replaces; another hash means
# another MMS, whose pipeline the source must be checked against before it may stand in for it.
REPLACED_SHA256 = "b25df178108adb838a2c96567c4f2a32cbcb6cd3a64384df4f9e3e3257b5471e"
MMS_VERSION = "1.1.11"  # the multi-model-server release whose jar has that class
JAVA_RELEASE = "8"  # the class file version of MMS's own classes (major 52)
UNGUARDED = ("GET/PUT/... on /invocations are answered like POST and a body over twice the request "
             "limit gets a 413 without a body")


class FrontEndError(RuntimeError):
    pass


def mms_version() -> str | None:
    try:
        return importlib.metadata.version("multi-model-server")
    except importlib.metadata.PackageNotFoundError:
        return None


def mms_jar() -> Path:
    spec = importlib.util.find_spec("mms")
    if spec is None or spec.origin is None:
        raise FrontEndError("multi-model-server is not installed (pip install 'clip-search[serve]')")
    return Path(spec.origin).parent / "frontend" / "model-server.jar"


def replaced_sha256(jar: Path) -> str | None:
    """SHA-256 of the jar's own copy of the class ours replaces (None if it has none)."""
    try:
        with zipfile.ZipFile(jar) as archive:
            return hashlib.sha256(archive.read(CLASS_PATH)).hexdigest()
    except (OSError, KeyError, zipfile.BadZipFile):
        return None


def _package_path(*parts: str) -> Path:
    return Path(str(resources.files("clip_search.serving").joinpath(JAVA_DIR, *parts)))


def _javac() -> str | None:
    return shutil.which("javac")


def build(dest: Path, jar: Path | None = None, javac: str | None = None) -> Path:
    """Compile ServerInitializer.java against `jar` into the jar `dest` (written atomically)."""
    jar = jar or mms_jar()
    found = replaced_sha256(jar)
    if found != REPLACED_SHA256:
        raise FrontEndError(f"{CLASS_NAME} in {jar} is not the multi-model-server {MMS_VERSION} class "
                            f"{SOURCE} was written against (sha256 {found})")
    javac = javac or _javac()
    if javac is None:
        raise FrontEndError("javac not found on the PATH: install a JDK (e.g. openjdk-17-jdk-headless)")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=dest.parent))
    try:
        classes = scratch / "classes"
        result = subprocess.run(
            [javac, "--release", JAVA_RELEASE, "-nowarn", "-encoding", "UTF-8", "-cp", str(jar),
             "-d", str(classes), str(_package_path(SOURCE))],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise FrontEndError(f"javac failed on {SOURCE}: {result.stderr.strip()}")
        staged = scratch / JAR
        with zipfile.ZipFile(staged, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(classes.rglob("*.class")):
                archive.write(path, path.relative_to(classes).as_posix())
        staged.replace(dest)  # atomic: a concurrent start sees the old jar or the new, never half
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return dest


def _cache_jar() -> Path:
    key = hashlib.sha256(_package_path(SOURCE).read_bytes() + REPLACED_SHA256.encode()
                         + JAVA_RELEASE.encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "clip-search" / "mms-front-end" / key / JAR


def compiled_jar(jar: Path) -> Path | None:
    """The front-end jar: packaged, cached, or compiled now; None if there is no way to."""
    for path in (_package_path(JAR), _cache_jar()):
        if path.is_file():
            return path
    if _javac() is None:
        return None
    return build(_cache_jar(), jar)


def front_end_jar(jar: Path | None = None) -> Path | None:
    """The jar to put ahead of MMS's on the JVM's class path, or None (with a warning).

    Never stops a start: without it MMS answers as it always did.
    """
    version = mms_version()
    if version != MMS_VERSION:
        logger.warning("multi-model-server %s is not %s, whose %s ours stands in for: %s",
                       version, MMS_VERSION, CLASS_NAME, UNGUARDED)
        return None
    try:
        found = compiled_jar(jar or mms_jar())
    except (FrontEndError, OSError) as error:
        logger.warning("front-end classes not built (%s): %s", error, UNGUARDED)
        return None
    if found is None:
        logger.warning("no compiled front-end classes and no javac to build them (install a JDK, "
                       "or use the image): %s", UNGUARDED)
    return found
