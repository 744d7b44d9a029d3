"""The `clip-search` command line: one subcommand per stage, each defined in its own module.

Subcommands are imported only when they run, so `clip-search --help` and light commands do not pay
for importing torch, boto3 or opensearch-py.
"""
import importlib

import click

# name -> "module:attribute" of a click command. Each stage owns its module.
COMMANDS = {
    "package-model": "clip_search.artifact_cli:package_model_command",
    "encode": "clip_search.encode_cli:encode",
    "serve": "clip_search.serving.cli:serve",
    "index": "clip_search.search.cli:index",
    "search": "clip_search.search.cli:search",
    "eval": "clip_search.search.cli:eval_command",
    "demo": "clip_search.demo:demo",
    "publish": "model_build.cli:publish",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=LazyGroup)
@click.version_option(package_name="clip-search")
def main():
    """Unified text + image product search with CLIP."""


if __name__ == "__main__":
    main()
