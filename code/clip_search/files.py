"""Every file the project reads by location is opened here: local paths, file://, http(s):// and s3://.

Local paths, `file://` and `http(s)://` go through fsspec (HTTP through its aiohttp filesystem, TLS
verified). `s3://` goes through boto3, which the AWS extras already bring and which honours
AWS_ENDPOINT_URL (moto in the tests): s3fs would pin botocore to an older release than the rest of
the AWS stack. Callers never look at the scheme themselves.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

CHUNK = 1 << 22


class FileAccessError(OSError):
    """A location could not be read. The message names the location and why."""


def scheme(location: str) -> str:
    head, sep, _ = str(location).partition("://")
    return head.lower() if sep else "file"


def is_remote(location: str) -> bool:
    return scheme(location) not in ("file", "local")


def split_s3(location: str) -> tuple[str, str]:
    """s3://bucket/key -> (bucket, key)."""
    bucket, _, key = str(location)[5:].partition("/")
    if not bucket:
        raise FileAccessError(f"not an s3://bucket/key location: {location}")
    return bucket, key


def _s3(config=None):
    from clip_search.extras import require

    require("publish", "boto3", what="reading s3:// locations")
    import boto3

    return boto3.client("s3", config=config)


def read_bytes(location, timeout: float = 30) -> bytes:
    """The whole content of a local path, file://, http(s):// or s3:// location."""
    location = str(location)
    kind = scheme(location)
    try:
        if kind == "s3":
            bucket, key = split_s3(location)
            return _s3().get_object(Bucket=bucket, Key=key)["Body"].read()
        if kind in ("http", "https"):
            import fsspec

            # One GET (cat_file), not fsspec.open: open's HEAD probe turns every failure (a 500, a
            # timeout, nothing listening) into FileNotFoundError. cat_file raises that for a 404 only.
            http = fsspec.filesystem("http", skip_instance_cache=True,
                                     client_kwargs={"timeout": _aiohttp_timeout(timeout)})
            return http.cat_file(location)
        return Path(local_path(location)).read_bytes()
    except FileAccessError:
        raise
    except FileNotFoundError:
        raise FileAccessError(f"{location}: no such file") from None
    except IsADirectoryError:
        raise FileAccessError(f"{location}: is a directory, not a file") from None
    except PermissionError:
        raise FileAccessError(f"{location}: permission denied") from None
    except Exception as error:  # noqa: BLE001 - network, HTTP status and S3 errors: say which location
        raise FileAccessError(f"cannot read {location}: {_reason(error)}") from error


def read_text(location, encoding: str = "utf-8") -> str:
    return read_bytes(location).decode(encoding)


def local_path(location: str) -> str:
    """A local file system path for a local path or file:// URL."""
    location = str(location)
    if location.startswith("file://"):
        return location[len("file://"):]
    if is_remote(location):
        raise FileAccessError(f"{location} is not a local path")
    return location


def list_prefix(location: str, suffixes: tuple[str, ...] = ()) -> Iterator[str]:
    """Locations of the files under a local folder or an s3:// prefix, sorted, optionally by suffix."""
    location = str(location)
    if scheme(location) == "s3":
        bucket, prefix = split_s3(location)
        client = _s3()
        keys = []
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys += [item["Key"] for item in page.get("Contents", [])]
        except Exception as error:  # noqa: BLE001 - botocore's errors (no such bucket, access, network)
            raise FileAccessError(f"cannot list {location}: {_reason(error)}") from error
        for key in sorted(keys):
            if not suffixes or key.endswith(suffixes):
                yield f"s3://{bucket}/{key}"
        return
    root = Path(local_path(location))
    if root.is_file():
        yield str(root)
        return
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if not suffixes or path.name.endswith(suffixes):
            yield str(path)


def presigned_url(location: str, seconds: int = 900) -> str:
    """A time-limited https URL for GET of an s3://bucket/key object (signed with the default AWS
    credentials; nothing is fetched)."""
    bucket, key = split_s3(location)
    if not key:
        raise FileAccessError(f"not an s3://bucket/key location: {location}")
    # SigV4 always: botocore presigns with SigV2 in us-east-1 by default, which S3 refuses for
    # objects encrypted with KMS (the stack's bucket, infra/clip-search.yaml) and for new regions.
    from botocore.config import Config

    client = _s3(Config(signature_version="s3v4"))
    return client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=int(seconds))


def sha256_file(path, chunk: int = CHUNK) -> str:
    """sha256 of a local file, read in chunks (artifacts are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _aiohttp_timeout(seconds: float):
    import aiohttp

    return aiohttp.ClientTimeout(total=seconds)


def _reason(error: Exception) -> str:
    response = getattr(error, "response", None)
    if isinstance(response, dict) and "Error" in response:  # botocore ClientError
        return f"{response['Error'].get('Code')}: {response['Error'].get('Message')}"
    return f"{type(error).__name__}: {error}"
