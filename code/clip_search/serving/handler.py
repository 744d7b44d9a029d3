"""The SageMaker inference handler: model_fn / input_fn / predict_fn / output_fn.

Served by our container's handler service (handler_service.py) or, through code/inference.py, by
any stock SageMaker PyTorch image. Each function is one stage; the work lives in its own module.
A stock image's toolkit only knows GenericInferenceToolkitError: our RequestErrors become one at
this edge, so it answers with their status too.
"""
import functools

from clip_search import content_types as ct
from clip_search import settings
from clip_search.encoder import ClipEncoder
from clip_search.errors import RequestError
from clip_search.serving.batch import EncodeResult, encode_request
from clip_search.serving.decoder import EncodeRequest, decode_request
from clip_search.serving.serializer import serialize


def _toolkit_errors(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except RequestError as error:
            from sagemaker_inference.errors import GenericInferenceToolkitError

            raise GenericInferenceToolkitError(error.status_code, error.message, error.phrase) from error

    wrapper.unwrapped = function
    return wrapper


def model_fn(model_dir: str) -> ClipEncoder:
    """Load the extracted artifact in `model_dir`; checksums verified, errors name the file."""
    return ClipEncoder.from_artifact(model_dir)


@_toolkit_errors
def input_fn(input_data, content_type: str) -> EncodeRequest:
    return decode_request(input_data, content_type)


@_toolkit_errors
def predict_fn(data: EncodeRequest, model: ClipEncoder) -> EncodeResult:
    return encode_request(model, data)


@_toolkit_errors
def output_fn(prediction: EncodeResult, accept: str) -> tuple[bytes, str]:
    default = ct.media_type(settings.current().default_accept) or ct.JSON
    if default not in ct.RESPONSE_TYPES:
        default = ct.JSON
    return serialize(prediction, accept, default)
