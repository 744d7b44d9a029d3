"""Building and installing our MMS front-end classes (their effect on the real server: the 405 tests in
tests/http_suite.py, the 413 in tests/server/test_hardening.py)."""
import logging
import struct
import zipfile

import pytest

from clip_search.serving import java_front_end as front_end

LOGGER = "clip_search.serving.java_front_end"
CLASS_FILES = {"ServerInitializer.class", "ServerInitializer$JsonTooLarge.class",
               "ServerInitializer$PostOnlyInvocations.class"}


def test_the_pinned_multi_model_server_has_the_class_ours_was_written_against():
    # an MMS upgrade changes this hash: ServerInitializer.java must then be checked against it
    assert front_end.replaced_sha256(front_end.mms_jar()) == front_end.REPLACED_SHA256


def test_build_compiles_the_classes_mms_loads_into_a_jar(tmp_path):
    jar = front_end.build(tmp_path / "front-end.jar")
    with zipfile.ZipFile(jar) as archive:
        names = archive.namelist()
        data = archive.read(front_end.CLASS_PATH)
    assert {name.rsplit("/", 1)[-1] for name in names} == CLASS_FILES
    assert all(name.startswith("com/amazonaws/ml/mms/") for name in names)
    magic, _minor, major = struct.unpack(">IHH", data[:8])
    assert magic == 0xCAFEBABE and major == 52  # Java 8 class files, like MMS's own
    assert b"io/netty/channel/ChannelInitializer" in data  # what MMS's ModelServer instantiates
    assert [path.name for path in tmp_path.iterdir()] == ["front-end.jar"]  # no scratch dir left behind


def test_the_jar_goes_ahead_of_mms_jars_on_a_class_path_of_jars_only(tmp_path, monkeypatch):
    from clip_search.serving import mms

    monkeypatch.setattr(front_end, "_cache_jar", lambda: tmp_path / "cache" / "front-end.jar")
    jar = front_end.front_end_jar()
    assert jar == tmp_path / "cache" / "front-end.jar" and jar.is_file()
    entries = mms.class_path(jar).split(":")
    assert entries[0] == str(jar) and entries[1:] == [str(front_end.mms_jar().parent / "*")]
    assert "." not in entries  # the JVM maps its class data archive only without class directories


def _jar_with(tmp_path, entries: dict):
    jar = tmp_path / "model-server.jar"
    with zipfile.ZipFile(jar, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return jar


def test_another_mms_version_keeps_its_own_class_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(front_end, "mms_version", lambda: "1.2.0")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert front_end.front_end_jar() is None
    assert "multi-model-server 1.2.0 is not 1.1.11" in caplog.text and "answered like POST" in caplog.text


def test_build_refuses_a_jar_whose_class_is_not_the_one_ours_stands_in_for(tmp_path):
    other = _jar_with(tmp_path, {front_end.CLASS_PATH: b"\xca\xfe\xba\xbe another version"})
    with pytest.raises(front_end.FrontEndError, match="not the multi-model-server 1.1.11 class"):
        front_end.build(tmp_path / "front-end.jar", jar=other)
    empty = _jar_with(tmp_path, {"META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\n"})
    with pytest.raises(front_end.FrontEndError, match="sha256 None"):
        front_end.build(tmp_path / "front-end.jar", jar=empty)
    assert not (tmp_path / "front-end.jar").exists()


def test_no_javac_and_nothing_compiled_warns_and_starts_without_them(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(front_end, "_javac", lambda: None)
    monkeypatch.setattr(front_end, "_cache_jar", lambda: tmp_path / "empty-cache" / "front-end.jar")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert front_end.front_end_jar() is None
    assert "no javac" in caplog.text
    assert not (tmp_path / "empty-cache").exists()


def test_a_compile_error_is_a_warning_not_a_failed_start(tmp_path, monkeypatch, caplog):
    broken = tmp_path / "javac"
    broken.write_text("#!/bin/sh\necho 'ServerInitializer.java:1: error: nope' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr(front_end, "_javac", lambda: str(broken))
    monkeypatch.setattr(front_end, "_cache_jar", lambda: tmp_path / "cache" / "front-end.jar")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert front_end.front_end_jar() is None
    assert "javac failed" in caplog.text and "error: nope" in caplog.text
    assert list((tmp_path / "cache").iterdir()) == []  # no jar, no scratch dir
