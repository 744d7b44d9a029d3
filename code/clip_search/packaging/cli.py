"""`clip-search package-model`: build model.tar.gz from open_clip weights (or the test model)."""
import logging
import sys
from pathlib import Path

import click

from clip_search.artifact import read_packed_manifest
from clip_search.encoder import TEST_MODEL_WARNING
from clip_search.errors import ModelDownloadError
from clip_search.packaging.build import DEFAULT_ARCH, DEFAULT_PRETRAINED, package_model
from clip_search.runtimes import PACKAGING_CHOICES, PACKAGING_DEFAULT

RUNTIME_CHOICES = PACKAGING_CHOICES


def _not_the_test_model_warning(record: logging.LogRecord) -> bool:
    return record.getMessage() != TEST_MODEL_WARNING


@click.command("package-model")
@click.option("--arch", default=DEFAULT_ARCH, show_default=True, help="open_clip architecture.")
@click.option("--pretrained", default=DEFAULT_PRETRAINED, show_default=True, help="open_clip pretrained tag.")
@click.option("--test-model", is_flag=True, help="Pack the tiny random-weights test model (no download).")
@click.option("--random-weights", is_flag=True, help="Full-size --arch with random weights (benchmarks).")
@click.option("--runtime", type=click.Choice(RUNTIME_CHOICES), default=PACKAGING_DEFAULT, show_default=True,
              help="Inference runtime to export for (at packaging time; the accuracy guard checks it "
                   "against torch fp32 and refuses the artifact if it drifts). auto: the fastest runtime "
                   "the guard accepts (onnx-int8, else openvino). torch: no export, no guard.")
@click.option("--calibration", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder of product photos + titles for the accuracy guard (default: demo_data/, "
                   "then ../shared/datasets/grocery-store).")
@click.option("--openvino-precision", type=click.Choice(["auto", "bf16", "f32"]), default="auto",
              show_default=True, help="OpenVINO INFERENCE_PRECISION_HINT recorded in the manifest "
                                      "(auto: bf16 on CPUs with bf16, f32 elsewhere).")
@click.option("--keep-weights", is_flag=True,
              help="Keep the fp32 safetensors (and code/ for stock PyTorch images) in an artifact packaged for "
                   "a torch-free runtime, so the torch runtime can serve it too (default: left out, a smaller "
                   "artifact).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("model.tar.gz"), show_default=True)
def package_model_command(arch, pretrained, test_model, random_weights, runtime, calibration,
                          openvino_precision, keep_weights, output):
    """Package an open_clip model as a SageMaker model artifact (model.tar.gz)."""
    options = {"calibration": calibration, "precision": openvino_precision}  # precision: OpenVINO only
    # The test-model warning is printed once, at the end; the encoder the guard loads would add its own.
    logging.getLogger("clip_search.encoder").addFilter(_not_the_test_model_warning)
    try:
        path = package_model(output, arch, pretrained, test_model=test_model, random_weights=random_weights,
                             runtime=runtime, runtime_options=options if runtime != "torch" else None,
                             keep_weights=keep_weights)
    except ModelDownloadError as error:
        click.echo(f"error: {error}", err=True)
        click.echo("hint: on a machine without internet, use --test-model or --random-weights", err=True)
        sys.exit(2)
    except Exception as error:  # noqa: BLE001 - export and guard failures: say why, write nothing
        from clip_search.packaging.guard import AccuracyGuardError

        if not isinstance(error, AccuracyGuardError):
            raise
        click.echo(f"error: {error}", err=True)
        click.echo("hint: no artifact was written; --runtime torch packages the reference path without a guard",
                   err=True)
        sys.exit(3)
    finally:
        logging.getLogger("clip_search.encoder").removeFilter(_not_the_test_model_warning)
    manifest = read_packed_manifest(path)
    size_mb = path.stat().st_size / 1e6
    click.echo(f"wrote {path} ({size_mb:.1f} MB): {manifest['model_id']}, dim {manifest['embed_dim']}, "
               f"runtime {manifest.get('runtime', 'torch')}")
    for refused, why in manifest.get("runtime_selection", {}).get("refused", {}).items():
        click.echo(f"WARNING: --runtime auto: the accuracy guard refused {refused} ({why}); "
                   f"packaged {manifest['runtime']} instead", err=True)
    if "accuracy_guard" in manifest:
        guard = manifest["accuracy_guard"]
        click.echo(f"accuracy guard passed: min cosine to torch fp32 {guard['min_cosine_image']:.5f} (images), "
                   f"{guard['min_cosine_text']:.5f} (texts) on {guard['images']} photos / {guard['texts']} "
                   f"titles from {guard['calibration']}")
    if manifest["random_weights"]:
        click.echo(TEST_MODEL_WARNING if manifest["test_model"] else
                   "WARNING: random weights: embeddings are meaningless (benchmarks only).", err=True)

