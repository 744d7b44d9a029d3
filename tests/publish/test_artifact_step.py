"""Step 1 against moto: the artifact lands in S3 once, under its content hash."""
import hashlib


def _objects(aws):
    return aws["s3"].list_objects_v2(Bucket=aws["bucket"]).get("Contents", [])


def test_upload_once_under_its_hash_and_rerun_changes_nothing(aws, publish_cli, test_model_tar):
    sha = hashlib.sha256(test_model_tar.read_bytes()).hexdigest()
    out = publish_cli("artifact", "--model", test_model_tar, "--bucket", aws["bucket"])
    key = f"clip-search/models/{sha[:16]}/model.tar.gz"
    assert f"model_data=s3://{aws['bucket']}/{key}" in out
    [obj] = _objects(aws)
    assert obj["Key"] == key and obj["Size"] == test_model_tar.stat().st_size
    assert aws["s3"].head_object(Bucket=aws["bucket"], Key=key)["Metadata"]["sha256"] == sha

    again = publish_cli("artifact", "--model", test_model_tar, "--bucket", aws["bucket"])
    assert "already in S3" in again
    assert _objects(aws) == [obj]  # same object, same LastModified/ETag


def test_settings_come_from_env_and_config_file(aws, publish_cli, test_model_tar, monkeypatch):
    config = aws["tmp"] / "publish.yaml"
    config.write_text(f"bucket: {aws['bucket']}\nprefix: from-file\n")
    monkeypatch.setenv("CLIP_SEARCH_S3_PREFIX", "from-env")
    out = publish_cli("--config", config, "artifact", "--model", test_model_tar)
    assert f"s3://{aws['bucket']}/from-env/models/" in out  # env beats the file
    out = publish_cli("--config", config, "artifact", "--model", test_model_tar, "--prefix", "from-flag")
    assert f"s3://{aws['bucket']}/from-flag/models/" in out  # a flag beats both


def _packed_manifest(aws, key, tmp_path) -> dict:
    from clip_search.artifact import read_packed_manifest

    local = tmp_path / "downloaded.tar.gz"
    aws["s3"].download_file(aws["bucket"], key, str(local))
    return read_packed_manifest(local)


def test_packages_the_model_when_none_is_given(aws, publish_cli, tmp_path):
    out = publish_cli("artifact", "--test-model", "--bucket", aws["bucket"])
    assert "packaged" in out and "uploaded artifact" in out
    [obj] = _objects(aws)
    assert obj["Key"].endswith("/model.tar.gz")
    # The fast path by default: the fastest runtime the accuracy guard accepts.
    manifest = _packed_manifest(aws, obj["Key"], tmp_path)
    assert manifest["runtime_selection"]["requested"] == "auto"
    assert manifest["runtime"] in ("onnx-int8", "openvino")
    assert manifest["accuracy_guard"]["min_cosine_image"] >= 0.999


def test_runtime_torch_packages_the_reference_path(aws, publish_cli, tmp_path):
    publish_cli("artifact", "--test-model", "--runtime", "torch", "--bucket", aws["bucket"])
    [obj] = _objects(aws)
    manifest = _packed_manifest(aws, obj["Key"], tmp_path)
    assert manifest["runtime"] == "torch" and "accuracy_guard" not in manifest


def test_missing_bucket_is_a_clear_error_and_creates_nothing(aws, publish_cli, test_model_tar):
    out = publish_cli("artifact", "--model", test_model_tar, "--bucket", "no-such-bucket-here", expect=1)
    assert "S3 bucket 'no-such-bucket-here' does not exist" in out
    assert "Traceback" not in out


def test_missing_setting_names_flag_and_variable(aws, publish_cli, test_model_tar):
    out = publish_cli("artifact", "--model", test_model_tar, expect=1)
    assert "--bucket / CLIP_SEARCH_BUCKET" in out


def test_unknown_config_key_is_refused(aws, publish_cli, test_model_tar):
    config = aws["tmp"] / "publish.json"
    config.write_text('{"buckett": "x"}')
    out = publish_cli("--config", config, "artifact", "--model", test_model_tar, expect=1)
    assert "unknown setting(s) ['buckett']" in out


def test_group_options_work_under_the_clip_search_command(aws, test_model_tar, monkeypatch):
    """`clip-search publish --config F --region R artifact`: the lead's CLI nests our group."""
    from click.testing import CliRunner

    from clip_search.cli import main

    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    config = aws["tmp"] / "publish.yaml"
    config.write_text(f"bucket: {aws['bucket']}\nprefix: nested\n")
    result = CliRunner().invoke(main, ["publish", "--config", str(config), "--region", "us-east-1",
                                       "artifact", "--model", str(test_model_tar)])
    assert result.exit_code == 0, result.output
    assert f"model_data=s3://{aws['bucket']}/nested/models/" in result.output
    result = CliRunner().invoke(main, ["publish", "--config", str(config), "artifact", "--model", str(test_model_tar)])
    assert result.exit_code == 1 and "no AWS region" in result.output
