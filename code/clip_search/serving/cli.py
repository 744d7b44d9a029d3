"""`clip-search serve`: the container's serving stack, natively on 127.0.0.1, until Ctrl-C."""
import signal
import sys
import threading
from pathlib import Path

import click

from clip_search.errors import ModelLoadError
from clip_search.serving.server import ModelServer, ServerError


@click.command("serve")
@click.option("--model", "model_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="model.tar.gz or an extracted artifact directory.")
@click.option("--port", default=8080, show_default=True, type=int)
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
    except (ServerError, ModelLoadError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    click.echo(f"serving {model_path} on {server.url}  (POST {server.url}/invocations; Ctrl-C stops)")
    try:
        while not stop.is_set():
            if server.process.poll() is not None:
                click.echo(f"error: model server exited with code {server.process.returncode}", err=True)
                sys.exit(1)
            stop.wait(0.5)
    finally:
        server.stop()
        click.echo("stopped")
