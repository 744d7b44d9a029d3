"""clip_search.files against real locations: the local disk, an HTTP server on loopback, moto's S3.

Every location the project reads (catalogue images, Batch Transform outputs, s3:// product photos)
goes through `read_bytes` / `list_prefix` / `presigned_url`; a failure must be a FileAccessError
that names the location and why, whatever the scheme.
"""
import hashlib
import http.server
import os
import threading
import time

import pytest
import requests

from clip_search import files
from clip_search.files import FileAccessError
from tests.moto_s3 import use_moto_s3

BUCKET = "clip-search-files-bucket"


# --- local paths and file:// -----------------------------------------------------------------------

def test_local_path_and_file_url_read_the_same_bytes(tmp_path):
    path = tmp_path / "photo.bin"
    path.write_bytes(b"\x00\xffbytes")
    assert files.read_bytes(path) == b"\x00\xffbytes"
    assert files.read_bytes(f"file://{path}") == b"\x00\xffbytes"
    (tmp_path / "t.txt").write_text("grüne Äpfel", encoding="utf-8")
    assert files.read_text(tmp_path / "t.txt") == "grüne Äpfel"


def test_a_missing_file_and_a_directory_are_named(tmp_path):
    with pytest.raises(FileAccessError, match=f"^{tmp_path / 'nope.jpg'}: no such file$"):
        files.read_bytes(tmp_path / "nope.jpg")
    with pytest.raises(FileAccessError, match=f"^{tmp_path}: is a directory, not a file$"):
        files.read_bytes(tmp_path)


def test_scheme_and_local_path():
    assert files.scheme("/data/x.jpg") == "file"
    assert files.scheme("S3://Bucket/key") == "s3"
    assert files.scheme("https://host/x") == "https"
    assert not files.is_remote("file:///data/x.jpg") and files.is_remote("http://host/x")
    assert files.local_path("file:///data/x.jpg") == "/data/x.jpg"
    assert files.local_path("relative/x.jpg") == "relative/x.jpg"
    with pytest.raises(FileAccessError, match="s3://b/k is not a local path"):
        files.local_path("s3://b/k")


def test_split_s3():
    assert files.split_s3("s3://bucket/a/b.jpg") == ("bucket", "a/b.jpg")
    assert files.split_s3("s3://bucket") == ("bucket", "")
    with pytest.raises(FileAccessError, match="not an s3://bucket/key location: s3:///key"):
        files.split_s3("s3:///key")


def test_list_prefix_of_a_folder_is_recursive_sorted_and_filtered(tmp_path):
    for name in ("b.out", "a.out", "sub/c.out", "sub/d.txt", "e.OUT"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / "empty-dir.out").mkdir()  # a directory is never listed, even with a matching name
    everything = [str(tmp_path / n) for n in ("a.out", "b.out", "e.OUT", "sub/c.out", "sub/d.txt")]
    assert list(files.list_prefix(tmp_path)) == everything
    assert list(files.list_prefix(f"file://{tmp_path}", suffixes=(".out",))) == [
        str(tmp_path / n) for n in ("a.out", "b.out", "sub/c.out")]
    # One file is its own listing.
    assert list(files.list_prefix(tmp_path / "sub" / "d.txt")) == [str(tmp_path / "sub" / "d.txt")]


def test_sha256_of_a_file_in_small_chunks_is_the_digest_of_its_bytes(tmp_path):
    data = os.urandom(10_000)
    (tmp_path / "blob").write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert files.sha256_file(tmp_path / "blob", chunk=333) == expected  # 31 chunks, the last partial
    assert files.sha256_file(tmp_path / "blob") == expected
    assert files.sha256_bytes(data) == expected


# --- http:// on loopback ------------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the standard library's name
        if self.path == "/photo.jpg":
            body = b"JPEG" * 1000
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/broken":
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/slow":
            time.sleep(5)
            self.send_response(200)
            self.end_headers()
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    do_HEAD = do_GET  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def http_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_http_reads_the_body(http_url):
    assert files.read_bytes(http_url + "/photo.jpg") == b"JPEG" * 1000


def test_http_404_is_no_such_file(http_url):
    with pytest.raises(FileAccessError, match=f"^{http_url}/gone.jpg: no such file$"):
        files.read_bytes(http_url + "/gone.jpg")


def test_http_timeout_is_honoured(http_url):
    start = time.monotonic()
    with pytest.raises(FileAccessError, match=f"{http_url}/slow"):
        files.read_bytes(http_url + "/slow", timeout=0.5)
    assert time.monotonic() - start < 4  # the server answers after 5 s


def test_http_500_names_the_status_not_a_missing_file(http_url):
    with pytest.raises(FileAccessError) as error:
        files.read_bytes(http_url + "/broken")
    assert "no such file" not in str(error.value) and "500" in str(error.value), str(error.value)


def test_http_timeout_is_named_as_a_timeout(http_url):
    with pytest.raises(FileAccessError) as error:
        files.read_bytes(http_url + "/slow", timeout=0.5)
    assert "no such file" not in str(error.value) and "timeout" in str(error.value).lower(), str(error.value)


def test_nothing_listening_is_named_as_unreachable():
    with pytest.raises(FileAccessError) as error:
        files.read_bytes("http://127.0.0.1:9/x.jpg", timeout=5)
    assert "no such file" not in str(error.value) and "cannot read" in str(error.value), str(error.value)


def test_list_prefix_of_a_url_is_refused():
    with pytest.raises(FileAccessError, match="is not a local path"):
        list(files.list_prefix("https://example.invalid/photos/"))


# --- s3:// against moto's server -------------------------------------------------------------------

@pytest.fixture
def s3(moto_url, monkeypatch):
    return use_moto_s3(moto_url, monkeypatch, BUCKET)


def test_s3_read_and_missing_key_and_bucket(s3):
    s3.put_object(Bucket=BUCKET, Key="photos/kiwi.jpg", Body=b"kiwi bytes")
    assert files.read_bytes(f"s3://{BUCKET}/photos/kiwi.jpg") == b"kiwi bytes"
    assert files.read_text(f"s3://{BUCKET}/photos/kiwi.jpg") == "kiwi bytes"
    with pytest.raises(FileAccessError, match=f"cannot read s3://{BUCKET}/photos/pear.jpg: NoSuchKey: "):
        files.read_bytes(f"s3://{BUCKET}/photos/pear.jpg")
    with pytest.raises(FileAccessError, match="cannot read s3://no-such-bucket-18/x: NoSuchBucket: "):
        files.read_bytes("s3://no-such-bucket-18/x")
    with pytest.raises(FileAccessError, match="not an s3://bucket/key location"):
        files.read_bytes("s3:///x")


def test_s3_list_prefix_is_sorted_filtered_and_stays_under_the_prefix(s3):
    for key in ("out/b.jpg.out", "out/a.jpg.out", "out/sub/c.jpg.out", "out/_SUCCESS", "other/z.out"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=key.encode())
    assert list(files.list_prefix(f"s3://{BUCKET}/out/", suffixes=(".out",))) == [
        f"s3://{BUCKET}/out/a.jpg.out", f"s3://{BUCKET}/out/b.jpg.out", f"s3://{BUCKET}/out/sub/c.jpg.out"]
    assert len(list(files.list_prefix(f"s3://{BUCKET}/out/"))) == 4
    assert list(files.list_prefix(f"s3://{BUCKET}/nothing-here/")) == []


def test_s3_presigned_url_fetches_the_object_and_needs_a_key(s3):
    s3.put_object(Bucket=BUCKET, Key="photos/kiwi.jpg", Body=b"kiwi bytes")
    url = files.presigned_url(f"s3://{BUCKET}/photos/kiwi.jpg", seconds=60)
    # SigV4 (S3 refuses SigV2 for KMS-encrypted objects, as the stack's bucket keeps them), in us-east-1 too.
    assert "X-Amz-Expires=60" in url and "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "%2Fs3%2Faws4_request" in url
    assert requests.get(url, timeout=10).content == b"kiwi bytes"
    with pytest.raises(FileAccessError, match=f"not an s3://bucket/key location: s3://{BUCKET}$"):
        files.presigned_url(f"s3://{BUCKET}")
