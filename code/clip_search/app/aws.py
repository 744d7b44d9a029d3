"""The query function for AWS: the search app as a Lambda handler behind an API Gateway HTTP API.

Handler: `clip_search.app.lambda_handler`. Mangum turns API Gateway v2 (HTTP API) events into ASGI
requests for the same Starlette app `clip-search app` serves, so the Lambda answers the same routes,
wire formats and errors. Queries are encoded by a SageMaker endpoint and searched in OpenSearch,
configured by environment variables:

  CLIP_SEARCH_INDEX      the OpenSearch index URL, https://HOST/INDEX_NAME (any INDEX works)
  CLIP_SEARCH_ENDPOINT   the SageMaker endpoint name (or a URL); empty = the encoder the index recorded
  AWS_REGION             set by Lambda; SigV4 for *.es.amazonaws.com / *.aoss.amazonaws.com hosts
  OPENSEARCH_*           as for `clip-search search` (auth, CA bundle)
  CLIP_SEARCH_APP_MAX_UPLOAD_MB, CLIP_SEARCH_PRESIGN_SECONDS, CLIP_SEARCH_IMAGE_ROOTS

The app is built on the first event and kept for the container's life (a warm Lambda reuses the
OpenSearch connection and the endpoint client). Product images in S3 answer with a redirect to a
presigned URL, so image bytes never pass through the Lambda.
"""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

_handler = None


def build_handler():
    """A Mangum handler for the app configured by the environment."""
    from clip_search import settings
    from clip_search.extras import require

    require("app", what="the Lambda handler")
    from mangum import Mangum

    from clip_search.app.build import open_service
    from clip_search.app.server import create_app

    current = settings.current()
    if not current.index:
        raise settings.SettingsError("CLIP_SEARCH_INDEX is not set: the Lambda handler needs the index to search "
                                     "(an OpenSearch URL https://HOST/INDEX_NAME)")
    service = open_service(current.index, endpoint=current.endpoint or None)
    logger.info("clip-search Lambda: index %s, model %s, encoder %s", current.index, service.model_id,
                current.endpoint or "recorded by the index")
    app = create_app(service, max_upload_bytes=int(current.app_max_upload_mb * 1024 * 1024))
    return Mangum(app, lifespan="off")


def handle(event, context):
    global _handler
    if _handler is None:
        _handler = build_handler()
    return _handler(event, context)


def reset() -> None:
    """Forget the built app (the next event builds it again from the environment)."""
    global _handler
    if _handler is not None:
        _handler.app.state.service.close()
    _handler = None
