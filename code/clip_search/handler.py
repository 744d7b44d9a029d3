"""The SageMaker inference handler: model_fn / input_fn / predict_fn / output_fn.

Served by our container's handler service (handler_service.py) or, through code/inference.py, by
any stock SageMaker PyTorch image. Each function is one stage; the work lives in its own module.
"""
import os

from clip_search import content_types as ct
from clip_search.batch import EncodeResult, encode_request
from clip_search.decoder import EncodeRequest, decode_request
from clip_search.encoder import ClipEncoder
from clip_search.serializer import serialize

DEFAULT_ACCEPT_ENV = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"


def model_fn(model_dir: str) -> ClipEncoder:
    """Load the extracted artifact in `model_dir`; checksums verified, errors name the file."""
    return ClipEncoder.from_artifact(model_dir)


def input_fn(input_data, content_type: str) -> EncodeRequest:
    return decode_request(input_data, content_type)


def predict_fn(data: EncodeRequest, model: ClipEncoder) -> EncodeResult:
    return encode_request(model, data)


def output_fn(prediction: EncodeResult, accept: str) -> tuple[bytes, str]:
    default = ct.media_type(os.environ.get(DEFAULT_ACCEPT_ENV)) or ct.JSON
    if default not in ct.RESPONSE_TYPES:
        default = ct.JSON
    return serialize(prediction, accept, default)
