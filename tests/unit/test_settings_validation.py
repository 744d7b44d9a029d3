"""clip_search.settings: every variable parsed and validated at once, with errors that name it.

Expected values here are the documented defaults and limits (docs/configuration.md), written out,
never read back from settings.VARIABLES.
"""
import logging

import pytest
from click.testing import CliRunner

from clip_search import settings
from clip_search.cli import main
from clip_search.settings import SettingsError


def test_unset_and_blank_variables_take_the_documented_defaults():
    for environ in ({}, {name: "  " for name in settings.NAMES}):
        parsed = settings.parse(environ)
        assert parsed.threads == 0 and parsed.runtime == "" and parsed.openvino_precision == ""
        assert parsed.jpeg_draft is True and parsed.debug is False
        assert parsed.max_image_pixels == 50_000_000 and parsed.max_resized_pixels == 4_000_000
        assert parsed.max_aspect_ratio == 20.0 and parsed.max_batch_items == 1024
        assert parsed.ready_timeout == 180.0 and parsed.exact_max_rows == 20_000 and parsed.flush_rows == 20_000
        assert parsed.presign_seconds == 900 and parsed.app_max_upload_mb == 6.0
        assert parsed.workers == 1 and parsed.max_payload_mb == 6.0 and parsed.bind_to_port == 8080
        assert parsed.default_accept == "application/json" and parsed.base_dir == "/opt/ml"


def test_values_are_parsed_to_their_types():
    parsed = settings.parse({
        "CLIP_SEARCH_THREADS": " 4 ", "CLIP_SEARCH_MAX_IMAGE_PIXELS": "1_000_000",
        "CLIP_SEARCH_MAX_ASPECT_RATIO": "2.5", "CLIP_SEARCH_JPEG_DRAFT": "Off", "CLIP_SEARCH_DEBUG": "YES",
        "CLIP_SEARCH_OPENVINO_PRECISION": " BF16 ", "CLIP_SEARCH_RUNTIME": " onnx-int8 ",
        "SAGEMAKER_BIND_TO_PORT": "32767", "CLIP_SEARCH_PRESIGN_SECONDS": "604800",
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "0.5",
    })
    assert parsed.threads == 4 and parsed.max_image_pixels == 1_000_000
    assert parsed.max_aspect_ratio == 2.5
    assert parsed.jpeg_draft is False and parsed.debug is True
    assert parsed.openvino_precision == "bf16" and parsed.runtime == "onnx-int8"
    assert parsed.bind_to_port == 32767 and parsed.presign_seconds == 604800 and parsed.max_payload_mb == 0.5


@pytest.mark.parametrize("name, raw, expected", [
    ("CLIP_SEARCH_THREADS", "four", "expected a whole number"),
    ("CLIP_SEARCH_THREADS", "1.5", "expected a whole number"),
    ("CLIP_SEARCH_THREADS", "-1", "expected a whole number >= 0"),
    ("CLIP_SEARCH_MAX_BATCH_ITEMS", "0", "expected a whole number >= 1"),
    ("SAGEMAKER_BIND_TO_PORT", "32768", "expected a whole number <= 32767"),
    ("CLIP_SEARCH_PRESIGN_SECONDS", "604801", "expected a whole number <= 604800"),
    ("CLIP_SEARCH_MAX_ASPECT_RATIO", "wide", "expected a number"),
    ("CLIP_SEARCH_MAX_ASPECT_RATIO", "0.5", "expected a number >= 1.0"),
    ("CLIP_SEARCH_READY_TIMEOUT", "0", "expected a number >= 0.1"),
    ("CLIP_SEARCH_JPEG_DRAFT", "maybe", "expected one of 1/0, true/false, yes/no, on/off"),
    ("CLIP_SEARCH_OPENVINO_PRECISION", "fp16", "expected one of auto, bf16, f32"),
])
def test_a_bad_value_names_the_variable_the_value_and_what_it_accepts(name, raw, expected):
    with pytest.raises(SettingsError) as error:
        settings.parse({name: raw})
    assert str(error.value) == f"{name}={raw!r} is not valid: {expected}"


def test_every_bad_variable_is_reported_at_once():
    with pytest.raises(SettingsError) as error:
        settings.parse({"CLIP_SEARCH_THREADS": "x", "SAGEMAKER_MODEL_SERVER_WORKERS": "0",
                        "CLIP_SEARCH_MAX_IMAGE_PIXELS": "10"})
    assert str(error.value) == ("CLIP_SEARCH_THREADS='x' is not valid: expected a whole number; "
                                "SAGEMAKER_MODEL_SERVER_WORKERS='0' is not valid: expected a whole number >= 1")


def test_current_follows_a_changed_variable_and_keeps_the_parse_otherwise(monkeypatch):
    monkeypatch.setenv("CLIP_SEARCH_MAX_BATCH_ITEMS", "7")
    first = settings.current()
    assert first.max_batch_items == 7
    assert settings.current() is first  # parsed once while nothing changed
    monkeypatch.setenv("CLIP_SEARCH_MAX_BATCH_ITEMS", "9")
    assert settings.current().max_batch_items == 9
    monkeypatch.setenv("CLIP_SEARCH_MAX_BATCH_ITEMS", "nine")
    with pytest.raises(SettingsError, match="CLIP_SEARCH_MAX_BATCH_ITEMS='nine'"):
        settings.current()


def test_the_start_up_line_shows_every_effective_setting(caplog):
    parsed = settings.parse({"CLIP_SEARCH_THREADS": "3", "SAGEMAKER_BIND_TO_PORT": "9001"})
    described = settings.describe(parsed)
    assert described["CLIP_SEARCH_THREADS"] == 3 and described["SAGEMAKER_BIND_TO_PORT"] == 9001
    assert described["SAGEMAKER_BASE_DIR"] == "/opt/ml"
    assert set(described) == set(settings.NAMES)
    log = logging.getLogger("test.settings")
    with caplog.at_level(logging.INFO, logger="test.settings"):
        settings.log_effective(log, parsed)
    [record] = [r for r in caplog.records if r.name == "test.settings"]
    line = record.getMessage()
    assert line.startswith("effective settings: ")
    assert "CLIP_SEARCH_THREADS=3 " in line and "SAGEMAKER_BIND_TO_PORT=9001 " in line
    assert "CLIP_SEARCH_JPEG_DRAFT=True" in line and line.count("=") >= len(settings.NAMES)


def test_a_secret_variable_is_never_shown(monkeypatch):
    # No variable of today's table is secret; one declared secret must be hidden in the error and the log.
    secret = settings.Variable("CLIP_SEARCH_THREADS", "threads", settings._int(0), 0, "x", secret=True)
    table = tuple(secret if v.name == "CLIP_SEARCH_THREADS" else v for v in settings.VARIABLES)
    monkeypatch.setattr(settings, "VARIABLES", table)
    with pytest.raises(SettingsError) as error:
        settings.parse({"CLIP_SEARCH_THREADS": "hunter2"})
    assert "hunter2" not in str(error.value)
    assert str(error.value) == "CLIP_SEARCH_THREADS=<hidden> is not valid: expected a whole number"
    assert settings.describe(settings.parse({"CLIP_SEARCH_THREADS": "5"}))["CLIP_SEARCH_THREADS"] == "<hidden>"


def test_the_cli_refuses_a_bad_setting_with_one_line_and_exit_1(test_model_tar):
    result = CliRunner().invoke(main, ["encode", "--model", str(test_model_tar), "red apple"],
                                env={"CLIP_SEARCH_MAX_BATCH_ITEMS": "lots"})
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["Error: CLIP_SEARCH_MAX_BATCH_ITEMS='lots' is not valid: expected a whole number"], lines


@pytest.mark.parametrize("raw, expected", [
    ("1", True), ("true", True), (" YES ", True), ("On", True), (True, True), (1, True),
    ("0", False), ("false", False), ("no", False), ("OFF", False), ("", False), ("  ", False), (False, False), (0, False),
])
def test_parse_bool_is_the_one_reading_of_yes_and_no(raw, expected):
    assert settings.parse_bool(raw) is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "tru", "1.0", 2, 1.0, None, ["1"]])
def test_parse_bool_refuses_anything_else_saying_what_it_takes(raw):
    with pytest.raises(ValueError, match="^one of 1/0, true/false, yes/no, on/off$"):
        settings.parse_bool(raw)


def test_a_yes_no_variable_uses_it(monkeypatch):
    assert settings.parse({"CLIP_SEARCH_JPEG_DRAFT": "off", "CLIP_SEARCH_DEBUG": "Yes"}).jpeg_draft is False
    with pytest.raises(SettingsError, match="CLIP_SEARCH_DEBUG='sure' is not valid: expected one of 1/0, true/false"):
        settings.parse({"CLIP_SEARCH_DEBUG": "sure"})
