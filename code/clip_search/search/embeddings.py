"""Where embeddings come from: the in-process encoder, a running endpoint (our native server or a
SageMaker endpoint), or Batch Transform output files. All give L2-normalised float32 rows and name
the model that made them, so an index can refuse vectors from another model."""
import base64
from pathlib import Path
from typing import Iterator

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
            out.update({record_id: vector for (record_id, _), vector in zip(decoded, vectors)})
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
        return {record_id: row for (record_id, _), row in zip(records, rows)}


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


def read_batch_output(location: str) -> dict[str, np.ndarray | str]:
    """Embeddings from Batch Transform output: `*.out` JSON Lines files in a folder or an S3 prefix
    (one `{"id", "embedding"}` or `{"id", "error"}` per line)."""
    from clip_search import files

    out: dict[str, np.ndarray | str] = {}
    try:
        for name in files.list_prefix(location, suffixes=(".out",)):
            out.update(parse_jsonlines_embeddings(files.read_bytes(name), where=name))
    except files.FileAccessError as error:
        raise EncodingError(str(error)) from None
    if not out:
        raise EncodingError(f"no embeddings found in Batch Transform output {location} (expected *.out files)")
    return out
