"""The `clip-search` command line: one subcommand per stage, each defined in its own module.

Subcommands are imported only when they run, so `clip-search --help` and light commands do not pay
for importing torch, boto3 or opensearch-py.

Every failure is one `Error: ...` line on stderr, mapped here once for every command: exit status 1
for bad input (ClipSearchError and its subclasses, a bad setting, a file that cannot be read), 2 for
usage and a missing extra. `--debug` or CLIP_SEARCH_DEBUG=1 also prints the traceback.
"""
import importlib
import sys
import traceback

import click

from clip_search import settings
from clip_search.errors import ClipSearchError
from clip_search.extras import MissingExtra

BAD_INPUT, USAGE = 1, 2

# name -> ("module:attribute" of a click command, one-line help). Each stage owns its module.
COMMANDS = {
    "package-model": ("clip_search.packaging.cli:package_model_command", "Package an open_clip model as model.tar.gz."),
    "encode": ("clip_search.encode_cli:encode", "Encode texts or images (in process or via an endpoint)."),
    "serve": ("clip_search.serving.cli:serve", "Serve the model natively with multi-model-server."),
    "index": ("clip_search.search.cli:index", "Encode a product catalogue and index it."),
    "search": ("clip_search.search.cli:search", "Search an index by text or by image."),
    "delete": ("clip_search.search.cli:delete", "Delete products by id from an index."),
    "eval": ("clip_search.search.cli:eval_command", "Retrieval recall on a labelled catalogue."),
    "opensearch": ("clip_search.search.opensearch_cli:opensearch", "Connect an OpenSearch index to the endpoint (ml-commons)."),
    "app": ("clip_search.app.cli:app", "Serve the search page and its HTTP API for an index."),
    "demo": ("clip_search.demo:demo", "Run the whole path end to end on one machine."),
    "publish": ("model_build.cli:publish", "Ship to SageMaker: S3, ECR, registry, endpoint, Batch Transform."),
}


class LazyGroup(click.Group):
    def main(self, *args, **kwargs):
        # A command whose optional extra is not installed: one line naming it, exit status 2.
        try:
            return super().main(*args, **kwargs)
        except MissingExtra as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(2)

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module_name, attribute = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort,
                KeyboardInterrupt, SystemExit):
            raise
        except MissingExtra as error:
            fail(ctx, error, USAGE)
        except (ClipSearchError, settings.SettingsError) as error:
            fail(ctx, error, BAD_INPUT)
        except OSError as error:  # a file that cannot be read or written: name it
            fail(ctx, error, BAD_INPUT, _os_message(error))
        except Exception as error:  # noqa: BLE001 - a bug, still one line (--debug shows where)
            fail(ctx, error, BAD_INPUT, f"{type(error).__name__}: {error} (run with --debug for the traceback)")

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _os_message(error: OSError) -> str:
    if error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return str(error)


def _debug(ctx) -> bool:
    if ctx.params.get("debug"):
        return True
    try:
        return settings.current().debug
    except settings.SettingsError:
        return False


def fail(ctx, error: BaseException, status: int, message: str | None = None):
    """Print `error` as one `Error: ...` line (after its traceback with --debug) and exit `status`."""
    if _debug(ctx):
        traceback.print_exception(error, file=sys.stderr)
    text = " ".join((message or str(error) or type(error).__name__).split())
    click.echo(f"Error: {text}", err=True)
    ctx.exit(status)


@click.group(cls=LazyGroup)
@click.version_option(package_name="clip-search")
@click.option("--debug", is_flag=True, help="Show the Python traceback behind an Error: line [env CLIP_SEARCH_DEBUG].")
def main(debug):
    """Unified text + image product search with CLIP."""
    # A command process never converts to or from pandas: LanceDB imports without it (~0.4 s).
    from clip_search.search import lancedb_import

    lancedb_import.defer_pandas()


if __name__ == "__main__":
    main()
