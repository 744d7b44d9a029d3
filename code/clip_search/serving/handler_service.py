"""The multi-model-server handler service: our handler functions behind MMS, with JSON errors.

Differences from the toolkit's stock Transformer, each on purpose:
- Bodies reach input_fn as bytes: the stock one decodes JSON bodies as UTF-8 before any handler
  runs, so invalid UTF-8 became a 500 with a traceback; here it is a 400 that says so.
- Errors are `{"error": ..., "status": N}` bodies with no traceback (tracebacks go to the log).
- A model that fails to load does not kill the worker in a restart loop that still answers /ping:
  the failure is logged once, loudly, and every request answers 500 saying why the model is down.
- A request with neither a body nor a Content-Type answers 400 saying /invocations takes a POST:
  MMS hands GET, HEAD, DELETE, ... on /invocations to the worker without the method
  (docs/hardening.md), and that is what they look like here.

MMS calls the module-level `handle(data, context)`; the first call (data None) initialises.
The worker logs how long its imports and the model load took (`worker ready: ...`): the two
Python parts of a cold start (benchmarks/serverless.py reads the line).
"""
import time

_IMPORT_STARTED = time.perf_counter()

import logging  # noqa: E402 - after the clock: the imports are what the timing line measures
import traceback  # noqa: E402
from http import HTTPStatus

import orjson  # noqa: E402
from sagemaker_inference.errors import GenericInferenceToolkitError  # noqa: E402

from clip_search import content_types as ct  # noqa: E402
from clip_search.errors import BadRequest, PayloadTooLarge, RequestError  # noqa: E402
from clip_search.serving import handler  # noqa: E402

logger = logging.getLogger(__name__)
IMPORT_SECONDS = time.perf_counter() - _IMPORT_STARTED


class HandlerService:
    def __init__(self):
        self.model = None
        self.load_error: str | None = None

    def initialize(self, context) -> None:
        model_dir = context.system_properties.get("model_dir")
        started = time.perf_counter()
        try:
            self.model = handler.model_fn(model_dir)
        except Exception as error:  # noqa: BLE001 - any load failure must be reported per request
            self.load_error = f"model failed to load from {model_dir}: {error}"
            logger.error("MODEL LOAD FAILED: %s\n%s", self.load_error, traceback.format_exc())
            return
        logger.info("worker ready: handler imports %.2f s, model load %.2f s (%s, %s threads)", IMPORT_SECONDS,
                    time.perf_counter() - started, self.model.runtime.name, self.model.threads)

    def handle(self, data, context) -> list:
        return [self._handle_one(index, request, context) for index, request in enumerate(data)]

    def _handle_one(self, index: int, request: dict, context):
        try:
            if self.load_error:
                raise _ServerError(self.load_error)
            headers = _lower_keys(context.get_all_request_header(index))
            body = request.get("body")
            if body is None:
                body = request.get("data") or b""
            if not body and not headers.get("content-type"):
                raise BadRequest(NOTHING_POSTED)
            check_size(body)
            decoded = handler.input_fn(body, headers.get("content-type"))
            prediction = handler.predict_fn(decoded, self.model)
            payload, media = handler.output_fn(prediction, headers.get("accept"))
            context.set_response_content_type(index, media)
            return payload
        except (RequestError, GenericInferenceToolkitError) as error:
            return _error(context, index, error.status_code, error.message)
        except _ServerError as error:
            return _error(context, index, HTTPStatus.INTERNAL_SERVER_ERROR, str(error))
        except Exception as error:  # noqa: BLE001 - never a traceback on the wire
            logger.exception("inference failed")
            message = f"internal error: {type(error).__name__}: {error}"
            return _error(context, index, HTTPStatus.INTERNAL_SERVER_ERROR, message)


def check_size(body) -> None:
    """The request limit with the documented JSON 413 (MMS itself takes up to twice as much)."""
    from clip_search.serving.mms import max_request_bytes

    limit = max_request_bytes()
    if len(body) > limit:
        raise PayloadTooLarge(f"request body is {len(body)} bytes, over the limit of {limit} bytes "
                              f"(SAGEMAKER_MAX_PAYLOAD_IN_MB); split the batch")


NOTHING_POSTED = (f"no request body and no Content-Type: POST the input to /invocations with its "
                  f"Content-Type ({', '.join(ct.REQUEST_TYPES)})")


class _ServerError(Exception):
    pass


def _lower_keys(headers) -> dict:
    return {str(key).lower(): value for key, value in (headers or {}).items()}


def _error(context, index: int, status: int, message: str) -> bytes:
    status = int(status)
    context.set_response_status(code=status, phrase=HTTPStatus(status).phrase, idx=index)
    context.set_response_content_type(index, ct.JSON)
    return orjson.dumps({"error": message, "status": status})


_service: HandlerService | None = None


def handle(data, context):
    global _service
    if _service is None:
        _service = HandlerService()
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
