"""Errors with an HTTP status, raised where bad input is found and rendered by the handler service.

They subclass the toolkit's `GenericInferenceToolkitError`, so the stock `sagemaker-inference`
Transformer (used when a stock SageMaker image serves our `inference.py`) also answers with the
right status; our own handler service renders them as `{"error": ..., "status": N}`.
"""
from http import HTTPStatus

from sagemaker_inference.errors import GenericInferenceToolkitError


class RequestError(GenericInferenceToolkitError):
    """A client error: the request, not the server, was wrong."""

    status = HTTPStatus.BAD_REQUEST

    def __init__(self, message: str):
        super().__init__(int(self.status), message, self.status.phrase)


class BadRequest(RequestError):
    status = HTTPStatus.BAD_REQUEST


class PayloadTooLarge(RequestError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedMediaType(RequestError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class NotAcceptable(RequestError):
    status = HTTPStatus.NOT_ACCEPTABLE


class ModelLoadError(RuntimeError):
    """The model artifact is missing, incomplete or corrupt. The message names the file."""


class ModelDownloadError(RuntimeError):
    """Pretrained weights could not be fetched (no network, unknown tag, hub error)."""
