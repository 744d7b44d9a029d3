"""The MMS configuration honours SageMaker's variables and adds the limits MMS lacks."""
from clip_search.serving import mms


def parse(text: str) -> dict:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = value  # java.util.Properties: the last one wins
    return values


def test_defaults(monkeypatch):
    for name in ("SAGEMAKER_MODEL_SERVER_WORKERS", "SAGEMAKER_MAX_PAYLOAD_IN_MB", "SAGEMAKER_MODEL_SERVER_VMARGS",
                 "SAGEMAKER_MODEL_SERVER_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    config = parse(mms.properties("http://0.0.0.0:8080", "http://0.0.0.0:8080"))
    assert config["default_service_handler"] == "clip_search.serving.handler_service"
    assert config["inference_address"] == "http://0.0.0.0:8080"
    assert config["default_workers_per_model"] == "1"
    assert config["max_request_size"] == str(2 * 6 * 1024 * 1024)  # the handler refuses above 6 MiB
    assert int(config["max_response_size"]) >= 32 * 1024 * 1024
    assert "-Xmx1g" in config["vmargs"]
    assert config["default_response_timeout"] == "60"


def test_sagemaker_variables_are_honoured(monkeypatch):
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "2")
    monkeypatch.setenv("SAGEMAKER_MAX_PAYLOAD_IN_MB", "100")
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_TIMEOUT", "300")
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_VMARGS", "-Xmx2g")
    config = parse(mms.properties("http://127.0.0.1:1", "http://127.0.0.1:2"))
    assert config["default_workers_per_model"] == "2"
    assert config["max_request_size"] == str(2 * 100 * 1024 * 1024)
    assert config["max_response_size"] == str(100 * 1024 * 1024)  # answers may be as large
    assert config["default_response_timeout"] == "300"
    assert config["vmargs"] == "-Xmx2g"


def test_threads_are_split_between_workers(monkeypatch, tmp_path):
    monkeypatch.delenv("CLIP_SEARCH_THREADS", raising=False)
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "1")
    env = mms.worker_environment(tmp_path)
    from clip_search.encoder import available_cores

    assert env["CLIP_SEARCH_THREADS"] == str(available_cores())
    assert env["TMPDIR"] == env["TEMP"] == str(tmp_path)
