"""`clip-search package-model`: build model.tar.gz from open_clip weights (or the test model)."""
import sys
from pathlib import Path

import click

from clip_search.artifact import DEFAULT_ARCH, DEFAULT_PRETRAINED, package_model, read_packed_manifest
from clip_search.encoder import TEST_MODEL_WARNING
from clip_search.errors import ModelDownloadError


@click.command("package-model")
@click.option("--arch", default=DEFAULT_ARCH, show_default=True, help="open_clip architecture.")
@click.option("--pretrained", default=DEFAULT_PRETRAINED, show_default=True, help="open_clip pretrained tag.")
@click.option("--test-model", is_flag=True, help="Pack the tiny random-weights test model (no download).")
@click.option("--random-weights", is_flag=True, help="Full-size --arch with random weights (benchmarks).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("model.tar.gz"), show_default=True)
def package_model_command(arch, pretrained, test_model, random_weights, output):
    """Package an open_clip model as a SageMaker model artifact (model.tar.gz)."""
    try:
        path = package_model(output, arch, pretrained, test_model=test_model, random_weights=random_weights)
    except ModelDownloadError as error:
        click.echo(f"error: {error}", err=True)
        click.echo("hint: on a machine without internet, use --test-model or --random-weights", err=True)
        sys.exit(2)
    manifest = read_packed_manifest(path)
    size_mb = path.stat().st_size / 1e6
    click.echo(f"wrote {path} ({size_mb:.1f} MB): {manifest['model_id']}, dim {manifest['embed_dim']}")
    if manifest["random_weights"]:
        click.echo(TEST_MODEL_WARNING if manifest["test_model"] else
                   "WARNING: random weights: embeddings are meaningless (benchmarks only).", err=True)

