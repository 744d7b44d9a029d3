"""`clip-search serve`: the container's serving stack, natively on 127.0.0.1, until Ctrl-C."""
import signal
import sys
import threading
from pathlib import Path

import click

from clip_search.errors import ClipSearchError, ModelLoadError
from clip_search.serving.mms import MAX_PORT
from clip_search.serving.server import ModelServer, ServerError, check_port


def _port(ctx, param, value):
    try:
        return check_port(value)
    except ServerError as error:
        raise click.BadParameter(str(error)) from None


@click.command("serve")
@click.option("--model", "model_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="model.tar.gz or an extracted artifact directory.")
@click.option("--port", default=8080, show_default=True, type=int, callback=_port,
              help=f"Port for /ping and /invocations (1-{MAX_PORT}: what multi-model-server accepts).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (the container binds 0.0.0.0; keep loopback for development).")
def serve(model_path, port, host):
    """Serve /ping and /invocations with multi-model-server and the clip-search handler."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server = ModelServer(model_path, port=port, host=host, log_file=sys.stderr.fileno())
    try:
        server.start()
    except ModelLoadError as error:
        click.echo(f"MODEL LOAD FAILED: {model_path}: {error}", err=True)
        sys.exit(1)
    except ServerError as error:
        raise ClipSearchError(str(error)) from error
    click.echo(f"serving {model_path} on {server.url}  (POST {server.url}/invocations; Ctrl-C stops)")
    try:
        while not stop.is_set():
            if server.process.poll() is not None:
                raise ClipSearchError(f"model server exited with code {server.process.returncode}")
            stop.wait(0.5)
    finally:
        server.stop()
        click.echo("stopped")
