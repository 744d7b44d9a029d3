"""The project's small error hierarchy. Each error says what was wrong; none needs an optional extra.

RequestError and its subclasses carry an HTTP status: raised where bad input is found (decoding an
image, parsing a request), rendered as `{"error": ..., "status": N}` by the serving layer and the
app, and as one `Error: ...` line by the CLI. For a stock SageMaker image, which only knows the
toolkit's GenericInferenceToolkitError, `clip_search.serving.handler` converts them at its edge.
"""
from http import HTTPStatus


class ClipSearchError(Exception):
    """Base of every error the project raises on purpose (the CLI prints these as one line)."""


class RequestError(ClipSearchError):
    """A client error: the request, not the server, was wrong."""

    status = HTTPStatus.BAD_REQUEST

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
        self.status_code = int(self.status)
        self.phrase = self.status.phrase


class BadRequest(RequestError):
    status = HTTPStatus.BAD_REQUEST


class PayloadTooLarge(RequestError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedMediaType(RequestError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class NotAcceptable(RequestError):
    status = HTTPStatus.NOT_ACCEPTABLE


class ModelLoadError(ClipSearchError, RuntimeError):
    """The model artifact is missing, incomplete or corrupt. The message names the file."""


class ModelDownloadError(ClipSearchError, RuntimeError):
    """Pretrained weights could not be fetched (no network, unknown tag, hub error)."""
