"""The MMS configuration honours SageMaker's variables and adds the limits MMS lacks."""
from pathlib import Path

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


def test_the_properties_are_the_toolkits_own(monkeypatch):
    """mms.toolkit_properties writes what sagemaker-inference's generator writes (it is not imported
    at run time: see the next test)."""
    import warnings

    with warnings.catch_warnings():  # the toolkit's model_server imports pkg_resources
        warnings.simplefilter("ignore")
        from sagemaker_inference import environment, model_server

    for variables in ({}, {"SAGEMAKER_MODEL_SERVER_WORKERS": "3", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "300",
                           "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "120", "SAGEMAKER_MODEL_SERVER_VMARGS": "-Xmx2g",
                           "SAGEMAKER_BIND_TO_PORT": "9090"}):
        for name in ("SAGEMAKER_MODEL_SERVER_WORKERS", "SAGEMAKER_MODEL_SERVER_TIMEOUT", "SAGEMAKER_BIND_TO_PORT",
                     "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS", "SAGEMAKER_MODEL_SERVER_VMARGS"):
            monkeypatch.delenv(name, raising=False)
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        env = environment.Environment()
        assert mms.toolkit_properties(env, mms.HANDLER) == model_server._generate_mms_config_properties(env, mms.HANDLER)
    assert Path(mms.LOG_CONFIG) == Path(model_server.DEFAULT_MMS_LOG_FILE)
    assert mms.MODEL_STORE == model_server.MODEL_STORE


def test_the_serving_path_does_not_import_boto3_or_scipy():
    """`serve` and the worker import only what serving needs: the toolkit's model_server (boto3,
    pkg_resources, psutil, scipy.sparse) cost ~1 s of every cold start twice, and ~15 MB of worker RSS."""
    import subprocess
    import sys

    modules = ("clip_search.serving.container_entry", "clip_search.serving.handler_service",
               "clip_search.serving.mms")
    script = (f"import sys\nfor name in {modules!r}: __import__(name)\n"
              "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = set(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout.split())
    assert loaded >= {"clip_search", "sagemaker_inference"}
    assert not loaded & {"boto3", "botocore", "s3transfer", "scipy", "pkg_resources", "psutil", "retrying"}


def test_the_jvm_class_path_is_mms_own_jars_only(tmp_path):
    # The class data archive maps only for a class path of jars that matches the dumped one
    # (serving/java_archive.py): no "." as MMS's launcher adds, no directory, no wildcard.
    entries = mms.class_path().split(":")
    frontend = mms.mms_home() / "mms" / "frontend"
    assert entries == [str(frontend / "model-server.jar")]  # multi-model-server 1.1.11 ships one jar
    config = tmp_path / "mms.properties"
    config.write_text("vmargs=-Xmx1g\n")
    command = mms.command(config, tmp_path)
    assert command[command.index("-cp") + 1] == mms.class_path()
    assert command[command.index("-cp") + 2] == "com.amazonaws.ml.mms.ModelServer"
