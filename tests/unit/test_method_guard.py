"""The method guard's build and install (its effect on the real server: tests/http_suite.py)."""
import hashlib
import logging
import struct
import zipfile

from clip_search.serving import method_guard


def test_the_pinned_multi_model_server_has_the_class_the_guard_was_written_against():
    # an MMS upgrade changes this hash: the guard's Java source must then be reviewed against it
    assert method_guard.replaced_sha256(method_guard.mms_jar()) == method_guard.REPLACED_SHA256


def test_build_compiles_the_guard_as_the_class_mms_loads(tmp_path):
    built = method_guard.build(tmp_path)
    data = built.read_bytes()
    magic, _minor, major = struct.unpack(">IHH", data[:8])
    assert magic == 0xCAFEBABE and major == 52  # Java 8 class files, like MMS's own
    assert b"com/amazonaws/ml/mms/http/ApiDescriptionRequestHandler" in data
    assert b"com/amazonaws/ml/mms/http/HttpRequestHandlerChain" in data  # it is a link of MMS's chain
    assert hashlib.sha256(data).hexdigest() != method_guard.REPLACED_SHA256
    assert [path.name for path in tmp_path.iterdir()] == [built.name]  # no scratch left behind


def test_install_puts_the_class_where_the_jvm_class_path_dot_finds_it(tmp_path):
    assert method_guard.install(tmp_path)
    installed = tmp_path / "com" / "amazonaws" / "ml" / "mms" / "http" / "ApiDescriptionRequestHandler.class"
    assert installed.read_bytes()[:4] == b"\xca\xfe\xba\xbe"


def _jar_with(tmp_path, entries: dict) -> str:
    jar = tmp_path / "model-server.jar"
    with zipfile.ZipFile(jar, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return jar


def test_another_mms_class_keeps_its_own_class_with_a_warning(tmp_path, caplog):
    other = _jar_with(tmp_path, {method_guard.CLASS_PATH: b"\xca\xfe\xba\xbe another version"})
    workdir = tmp_path / "work"
    with caplog.at_level(logging.WARNING, logger="clip_search.serving.method_guard"):
        assert not method_guard.install(workdir, jar=other)
    assert not workdir.exists()
    assert "not the multi-model-server 1.1.11 class" in caplog.text and "answered like POST" in caplog.text


def test_a_jar_without_the_class_is_not_guarded(tmp_path, caplog):
    empty = _jar_with(tmp_path, {"META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\n"})
    with caplog.at_level(logging.WARNING, logger="clip_search.serving.method_guard"):
        assert not method_guard.install(tmp_path / "work", jar=empty)
    assert "sha256 None" in caplog.text


def test_no_javac_and_nothing_compiled_warns_and_starts_without_the_guard(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(method_guard, "_javac", lambda: None)
    monkeypatch.setattr(method_guard, "_cache_dir", lambda _sha: tmp_path / "empty-cache")
    with caplog.at_level(logging.WARNING, logger="clip_search.serving.method_guard"):
        assert not method_guard.install(tmp_path / "work")
    assert "no javac" in caplog.text
    assert not (tmp_path / "work").exists()
