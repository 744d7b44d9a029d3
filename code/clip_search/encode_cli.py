"""`clip-search encode`: texts or images to embeddings, in process or through an endpoint."""
import base64
import sys
from pathlib import Path

import click
import numpy as np
import orjson

from clip_search.aws_region import region_option
from clip_search.errors import ClipSearchError, RequestError


def _decode(encoder, path: Path):
    try:
        return encoder.decode(path.read_bytes())
    except RequestError as error:
        raise ClipSearchError(f"{path}: {error.message}") from error


@click.command("encode")
@click.argument("texts", nargs=-1)
@click.option("--image", "images", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An image file to encode (repeatable).")
@click.option("--model", "model_path", type=click.Path(exists=True, path_type=Path),
              help="model.tar.gz or an extracted artifact directory (encode in this process).")
@click.option("--endpoint", help="A SageMaker endpoint name, or the URL of a running server.")
@region_option
def encode(texts, images, model_path, endpoint):
    """Print {"embeddings", "dim", "model"} for TEXTS and/or --image files as JSON."""
    if bool(model_path) == bool(endpoint):
        raise click.UsageError("give exactly one of --model or --endpoint")
    if not texts and not images:
        raise click.UsageError("nothing to encode: give TEXTS and/or --image FILE")
    if endpoint:
        from clip_search.endpoint_client import EndpointClient

        client = EndpointClient(endpoint)
        parts = []
        if texts:
            parts.append(client.encode_texts(list(texts)))
        if images:
            rows = client.encode_records("image", [base64.b64encode(path.read_bytes()).decode("ascii")
                                                   for path in images])
            for path, row in zip(images, rows, strict=True):
                if isinstance(row, str):
                    raise ClipSearchError(f"{path}: the endpoint refused the image: {row}")
            parts.append(np.stack(rows))
        model_id = getattr(client, "model_id", None) or endpoint
    else:
        from clip_search.encoder import ClipEncoder

        encoder = ClipEncoder.from_artifact(model_path)
        parts = []
        if texts:
            parts.append(encoder.encode_texts(list(texts)))
        if images:
            parts.append(encoder.encode_images([_decode(encoder, path) for path in images]))
        model_id = encoder.model_id
    vectors = np.concatenate(parts).astype(np.float32)
    answer = {"embeddings": vectors, "dim": int(vectors.shape[1]), "model": model_id}
    sys.stdout.buffer.write(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
