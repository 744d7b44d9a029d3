"""`clip-search app`: the search page and its HTTP API over an index, on uvicorn (loopback by default)."""
from __future__ import annotations

import click

from clip_search.search.cli import ENDPOINT_ENV, MODEL_ENV


def run_app(service, host: str, port: int, max_upload_mb: float | None = None, log_level: str = "info") -> None:
    """Serve `service` until Ctrl-C, after printing the URL to open."""
    from clip_search import settings
    from clip_search.app.server import bind, create_app, serve, url_of

    limit = max_upload_mb if max_upload_mb is not None else settings.current().app_max_upload_mb
    app = create_app(service, max_upload_bytes=int(limit * 1024 * 1024))
    try:
        sock = bind(host, port)
    except OSError as error:
        raise click.ClickException(str(error)) from None
    url = url_of(sock)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.secho(f"the app listens on {host}: anyone who can reach this machine can search the index",
                    fg="yellow", err=True)
    click.secho(f"clip-search app: {url}/  (index {service.location}, model {service.model_id}; Ctrl-C stops)",
                bold=True)
    try:
        serve(app, sock, log_level=log_level)
    finally:
        sock.close()
        service.close()


@click.command("app")
@click.option("--index", "index_location", required=True, help="Folder, OpenSearch URL (…/INDEX_NAME) or postgresql:// DSN.")
@click.option("--model", envvar=MODEL_ENV, metavar="model.tar.gz",
              help=f"Encode queries in process with this model artifact [env {MODEL_ENV}].")
@click.option("--endpoint", envvar=ENDPOINT_ENV, metavar="URL_OR_NAME",
              help=f"Encode queries with a running endpoint: our server's URL or a SageMaker endpoint name [env {ENDPOINT_ENV}].")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback: this machine only).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free port).")
@click.option("--image-root", "image_roots", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="A folder local product images may be served from (repeatable) [env CLIP_SEARCH_IMAGE_ROOTS]; "
                   "default: the folders the indexed products' images are in.")
def app(index_location, model, endpoint, host, port, image_roots):
    """Serve the search page and its JSON API for INDEX. Without --model/--endpoint, queries are
    encoded by the encoder the index recorded when it was built."""
    from clip_search.app.build import open_service
    from clip_search.extras import require
    from clip_search.search.errors import SearchError

    require("app", what="clip-search app")
    if model and endpoint:
        raise click.UsageError("give --model or --endpoint, not both")
    try:
        service = open_service(index_location, model, endpoint, image_roots=list(image_roots) or None)
    except SearchError as error:
        raise click.ClickException(str(error)) from None
    run_app(service, host, port)
