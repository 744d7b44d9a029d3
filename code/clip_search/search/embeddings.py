"""Where embeddings come from: the in-process encoder, a running endpoint (our native server or a
SageMaker endpoint), or Batch Transform output files. All give L2-normalised float32 rows and name
the model that made them, so an index can refuse vectors from another model."""
import base64
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from clip_search.search.errors import EncodingError

JSONLINES = "application/jsonlines"


class Embedder:
    """encode_texts(list[str]) / encode_images(list[bytes]) -> (n, dim) float32."""

    model_id: str
    dim: int
    is_test_model: bool = False
    spec: dict | None = None  # how to rebuild this embedder: {"model": path} or {"endpoint": url}

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def encode_images(self, images: list[bytes]) -> np.ndarray:
        raise NotImplementedError

    def encode_image_records(self, records: list[tuple[str, bytes]]) -> dict[str, np.ndarray | str]:
        """id -> embedding, or id -> error message for an image that could not be used."""
        out = {}
        for record_id, data in records:
            try:
                out[record_id] = self.encode_images([data])[0]
            except Exception as error:  # one bad image must not stop a catalogue
                out[record_id] = str(error)
        return out


class LocalEmbedder(Embedder):
    """The in-process ClipEncoder (model.tar.gz or an extracted artifact folder)."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.model_id = encoder.model_id
        self.dim = encoder.dim
        self.is_test_model = encoder.is_test_model

    @classmethod
    def from_artifact(cls, path) -> "LocalEmbedder":
        from clip_search.encoder import ClipEncoder

        embedder = cls(ClipEncoder.from_artifact(path))
        embedder.spec = {"model": str(Path(path).resolve())}
        return embedder

    def encode_texts(self, texts):
        return self.encoder.encode_texts(list(texts))

    def encode_images(self, images):
        return self.encoder.encode_image_bytes(list(images))

    def encode_image_records(self, records):
        decoded, out = [], {}
        for record_id, data in records:
            try:
                decoded.append((record_id, self.encoder.decode(data)))
            except Exception as error:
                out[record_id] = f"cannot decode image: {error}"
        if decoded:
            vectors = self.encoder.encode_images([image for _, image in decoded])
            out.update({record_id: vector for (record_id, _), vector in zip(decoded, vectors, strict=True)})
        return out


class RemoteEmbedder(Embedder):
    """A deployed model through EndpointClient (JSON Lines batches under the payload limit): our
    native server or the container by URL, or a SageMaker endpoint by name."""

    def __init__(self, client, target: str):
        self.client = client
        self.spec = {"endpoint": target}

    def _call(self, function, *args):
        from clip_search.endpoint_client import EndpointError

        try:
            return function(*args)
        except EndpointError as error:
            raise EncodingError(str(error)) from None

    @property
    def model_id(self) -> str:
        return self._call(lambda: self.client.model_id)

    @property
    def dim(self) -> int:
        return self._call(lambda: self.client.dim)

    def encode_texts(self, texts):
        return self._call(self.client.encode_texts, list(texts))

    def encode_images(self, images):
        return self._call(self.client.encode_images, list(images))

    def encode_image_records(self, records):
        """Per-record errors come back as lines, so one bad image does not fail the batch."""
        values = [base64.b64encode(data).decode("ascii") for _, data in records]
        rows = self._call(self.client.encode_records, "image", values)
        return {record_id: row for (record_id, _), row in zip(records, rows, strict=True)}


class EndpointEmbedder(RemoteEmbedder):
    """Our native server or any HTTP endpoint that speaks the handler contract: POST URL/invocations."""

    def __init__(self, url: str, timeout: float = 120):
        from clip_search.endpoint_client import EndpointClient

        super().__init__(EndpointClient(url, timeout=timeout), url)


class SageMakerEmbedder(RemoteEmbedder):
    """A SageMaker endpoint by name, through sagemaker-runtime InvokeEndpoint."""

    def __init__(self, endpoint_name: str, region: str | None = None, client=None):
        from clip_search.endpoint_client import EndpointClient

        super().__init__(EndpointClient(endpoint_name, region=region, runtime_client=client), endpoint_name)


def embedder_for(model: str | None = None, endpoint: str | None = None) -> Embedder:
    if bool(model) == bool(endpoint):
        raise EncodingError("give exactly one of --model (model.tar.gz or folder) or --endpoint (URL or SageMaker endpoint name)")
    if model:
        return LocalEmbedder.from_artifact(model)
    if endpoint.startswith(("http://", "https://")):
        return EndpointEmbedder(endpoint)
    return SageMakerEmbedder(endpoint)


# --- Batch Transform output ------------------------------------------------------------------
def parse_jsonlines_embeddings(text: str | bytes, where: str = "response") -> dict[str, np.ndarray | str]:
    from clip_search.endpoint_client import EndpointError, embedding_lines

    try:
        return dict(embedding_lines(text, where))
    except EndpointError as error:
        raise EncodingError(str(error)) from None


# .out files are parsed a chunk of lines at a time; bigger outputs by a process per core.
CHUNK_LINES = 8192
PARALLEL_MIN_BYTES = 64 * 1024 * 1024


def _parse_output_file(name: str, spill: str) -> dict:
    """Parse one .out file (through embedding_lines, the one parser of the handler's JSON Lines) a
    chunk of lines at a time; embeddings go to `spill` as float32 rows, never all in memory.
    Returns the row ids (in row order), the ids whose last line in the file is an error, the
    dimension, and per-row dimension errors."""
    from itertools import islice

    from clip_search import files
    from clip_search.endpoint_client import EndpointError, embedding_lines

    ids: list[str] = []
    errors: dict[str, str] = {}
    dim = None
    try:
        if files.is_remote(name):
            handle = None
            lines = iter(files.read_bytes(name).splitlines())
        else:
            handle = open(files.local_path(name), "rb")
            lines = iter(handle)
    except (files.FileAccessError, OSError) as error:
        raise EncodingError(str(error)) from None
    try:
        with open(spill, "wb") as out:
            number = 1
            while chunk := list(islice(lines, CHUNK_LINES)):
                vectors = []
                for product_id, value in embedding_lines(chunk, name, first_line=number):
                    if isinstance(value, str):
                        errors[product_id] = value
                        continue
                    if dim is None:
                        dim = len(value)
                    if len(value) != dim:
                        errors[product_id] = f"embedding has dimension {len(value)}, the others in {name} {dim}"
                        continue
                    errors.pop(product_id, None)
                    ids.append(product_id)
                    vectors.append(value)
                number += len(chunk)
                if vectors:
                    np.stack(vectors).astype(np.float32, copy=False).tofile(out)
    except EndpointError as error:
        raise EncodingError(str(error)) from None
    finally:
        if handle is not None:
            handle.close()
    return {"ids": ids, "errors": errors, "dim": dim}


class BatchOutput(Mapping):
    """Embeddings from Batch Transform output, read streaming: `*.out` JSON Lines files in a folder
    or an S3 prefix (one `{"id", "embedding"}` or `{"id", "error"}` per line; a later line for an
    id wins). The vectors live in float32 spill files in a temporary folder (removed on close() or
    when the object goes), and only the id -> row map in memory: ~150 MB for a million products
    instead of ~2 GB of arrays. A mapping id -> embedding (or error message); `take(ids)` looks up
    a batch at once."""

    def __init__(self, location: str, workers: int | None = None):
        import tempfile
        import weakref

        from clip_search import files

        self.location = location
        try:
            names = list(files.list_prefix(location, suffixes=(".out",)))
        except files.FileAccessError as error:
            raise EncodingError(str(error)) from None
        self._names = names
        self._folder = tempfile.mkdtemp(prefix="clip-search-embeddings-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._folder, True)
        self._spills = [os.path.join(self._folder, f"{n}.f32") for n in range(len(names))]
        self._rows: dict[str, int] = {}  # id -> file number << 32 | row in that file
        self._errors: dict[str, str] = {}
        self._sizes: list[int] = []
        self._dim: int | None = None
        self._pool = self._pending = None
        local = not any(files.is_remote(name) for name in names)
        size = sum(os.path.getsize(files.local_path(name)) for name in names) if local else 0
        workers = min(workers or os.cpu_count() or 1, len(names))
        if workers >= 2 and size >= PARALLEL_MIN_BYTES:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # Parsed in the background (the caller meanwhile opens its index); spawn, not fork: the
            # parent may already run LanceDB's threads, which a fork would copy mid-flight.
            self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            self._pending = [self._pool.submit(_parse_output_file, name, spill) for name, spill in zip(names, self._spills, strict=True)]
        else:
            self._collect([_parse_output_file(name, spill) for name, spill in zip(names, self._spills, strict=True)])

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            try:
                self._collect([future.result() for future in pending])
            finally:
                self._pool.shutdown(cancel_futures=True)

    def _collect(self, results) -> None:
        try:
            for number, result in enumerate(results):
                self._add(number, result, self._names[number])
        except BaseException:
            self.close()
            raise
        if not self._rows and not self._errors:
            self.close()
            raise EncodingError(f"no embeddings found in Batch Transform output {self.location} (expected *.out files)")

    @property
    def dim(self) -> int | None:
        self._wait()
        return self._dim

    def _add(self, number: int, result: dict, name: str) -> None:
        if result["dim"] is not None:
            if self._dim is None:
                self._dim = result["dim"]
            elif result["dim"] != self._dim:
                raise EncodingError(f"{name}: embeddings of dimension {result['dim']}, other .out files have {self._dim}")
        base = number << 32
        rows, errors = self._rows, self._errors
        if errors:
            for row, product_id in enumerate(result["ids"]):
                rows[product_id] = base | row
                errors.pop(product_id, None)
        else:
            rows.update(zip(result["ids"], range(base, base + len(result["ids"])), strict=True))
        for product_id, message in result["errors"].items():
            rows.pop(product_id, None)
            errors[product_id] = message
        self._sizes.append(len(result["ids"]))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        self._cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __len__(self):
        self._wait()
        return len(self._rows) + len(self._errors)

    def __iter__(self):
        self._wait()
        yield from self._rows
        yield from self._errors

    def __getitem__(self, product_id):
        self._wait()
        if product_id in self._errors:
            return self._errors[product_id]
        vectors, _ = self.take([product_id])
        if product_id not in self._rows:
            raise KeyError(product_id)
        return vectors[0]

    def take(self, ids: list[str]) -> tuple[np.ndarray, list[str | None]]:
        """(len(ids), dim) float32 embeddings of `ids` (zero rows where there is none) and per id
        None or the reason there is no embedding."""
        dim = self.dim
        rows = np.fromiter((self._rows.get(product_id, -1) for product_id in ids), np.int64, len(ids))
        vectors = np.zeros((len(ids), dim or 0), np.float32)
        reasons: list[str | None] = [None] * len(ids)
        for i in np.flatnonzero(rows < 0):
            reasons[i] = self._errors.get(ids[i], "no embedding in the precomputed output")
        found = rows >= 0
        for number in np.unique(rows[found] >> 32):
            mine = np.flatnonzero(found & ((rows >> 32) == number))
            # A map per batch, released after it: pages read stay in the page cache, not in our RSS.
            spill = np.memmap(self._spills[number], np.float32, "r", shape=(self._sizes[number], dim))
            vectors[mine] = spill[rows[mine] & 0xFFFFFFFF]
            del spill
        return vectors, reasons


def read_batch_output(location: str) -> BatchOutput:
    """Embeddings from Batch Transform output (`*.out` files in a folder or an S3 prefix): a
    BatchOutput, id -> embedding or error message."""
    return BatchOutput(location)
