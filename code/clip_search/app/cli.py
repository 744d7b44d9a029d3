"""`clip-search app`: the search page and its HTTP API over an index, on uvicorn (loopback by default)."""
from __future__ import annotations

import click

from clip_search.aws_region import region_option
from clip_search.search.cli import ENDPOINT_ENV, MODEL_ENV


def listen(host: str, port: int):
    from clip_search.app.server import bind

    try:
        return bind(host, port)
    except OSError as error:
        raise click.ClickException(str(error)) from None


def run_app(service, host: str, port: int, *, sock=None, log_level: str = "info") -> None:
    """Serve `service` until Ctrl-C or SIGTERM, after printing the URL to open."""
    from clip_search import settings
    from clip_search.app.server import create_app, serve, url_of

    app = create_app(service, max_upload_bytes=int(settings.current().app_max_upload_mb * 1024 * 1024))
    sock = sock or listen(host, port)
    url = url_of(sock)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.secho(f"the app listens on {host}: anyone who can reach this machine can search the index",
                    fg="yellow", err=True)
    click.secho(f"clip-search app: {url}/  (index {service.location}, model {service.model_id}; Ctrl-C stops)",
                bold=True)
    restore = _stop_on_sigterm()
    try:
        serve(app, sock, log_level=log_level)
    except KeyboardInterrupt:  # uvicorn shut down cleanly, then re-raised the signal it caught
        pass
    finally:
        restore()
        sock.close()
        service.close()
    click.echo("clip-search app stopped")


def _stop_on_sigterm():
    """SIGTERM stops the app like Ctrl-C (so callers' cleanup runs); returns the undo."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    return lambda: signal.signal(signal.SIGTERM, previous)


@click.command("app")
@click.option("--index", "index_location", required=True, help="Folder, OpenSearch URL (…/INDEX_NAME) or postgresql:// DSN.")
@click.option("--model", envvar=MODEL_ENV, metavar="model.tar.gz",
              help=f"Encode queries in process with this model artifact [env {MODEL_ENV}].")
@click.option("--endpoint", envvar=ENDPOINT_ENV, metavar="URL_OR_NAME",
              help=f"Encode queries with a running endpoint: our server's URL or a SageMaker endpoint name [env {ENDPOINT_ENV}].")
@region_option
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
    sock = listen(host, port)  # a busy port fails before the model loads
    try:
        service = open_service(index_location, model, endpoint, image_roots=list(image_roots) or None)
    except SearchError as error:
        sock.close()
        raise click.ClickException(str(error)) from None
    run_app(service, host, port, sock=sock)
