"""The search app: an HTTP API and a search page over any index (`clip-search app`), and the same
app as an AWS Lambda handler for API Gateway HTTP APIs (`clip_search.app.lambda_handler`).

Importing this package is cheap; Starlette, uvicorn and Mangum are imported when used.
"""
from __future__ import annotations


def lambda_handler(event, context):
    """AWS Lambda entry point (handler `clip_search.app.lambda_handler`): API Gateway HTTP API (v2)
    events through Mangum into the app, built once per Lambda container from the environment."""
    from clip_search.app.aws import handle

    return handle(event, context)


def create_app(service, **options):
    from clip_search.app.server import create_app as create

    return create(service, **options)


__all__ = ["lambda_handler", "create_app"]
