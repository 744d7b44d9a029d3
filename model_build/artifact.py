"""Step 1: package the model (clip_search.packaging.build) and upload model.tar.gz to S3.

The key holds the tarball's SHA-256, so an upload never overwrites the artifact of a registered
model, and uploading the same file again is a no-op.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from clip_search.files import sha256_file
from model_build.aws import Aws, client_error_code
from model_build.errors import PublishError


def upload_artifact(aws: Aws, model_path: Path | None = None, package_options: dict | None = None,
                    echo: Callable[[str], None] = print) -> str:
    """Upload model_path (or a freshly packaged model) and return its s3:// URI."""
    config = aws.config
    config.require("bucket")
    aws.check_bucket(config.bucket)
    with tempfile.TemporaryDirectory(prefix="clip-search-publish-") as scratch:
        if model_path is None:
            from clip_search.packaging.build import package_model

            model_path = package_model(Path(scratch) / "model.tar.gz", **(package_options or {}))
            echo(f"packaged {model_path} ({model_path.stat().st_size} bytes)")
        model_path = Path(model_path)
        if not model_path.is_file():
            raise PublishError(f"model artifact {model_path} does not exist (clip-search package-model -o {model_path})")
        sha = sha256_file(model_path)
        key = f"{config.prefix.strip('/')}/models/{sha[:16]}/model.tar.gz"
        uri = f"s3://{config.bucket}/{key}"
        s3 = aws.client("s3")
        try:
            head = s3.head_object(Bucket=config.bucket, Key=key)
            if head.get("Metadata", {}).get("sha256") == sha:
                echo(f"artifact already in S3: {uri}")
                return uri
        except Exception as error:  # 404: not uploaded yet
            if client_error_code(error) not in ("404", "NoSuchKey"):
                raise
        s3.upload_file(str(model_path), config.bucket, key, ExtraArgs={"Metadata": {"sha256": sha}})
        echo(f"uploaded artifact: {uri}")
        return uri
