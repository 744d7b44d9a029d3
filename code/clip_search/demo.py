"""`clip-search demo`: the whole path on one machine, with the embedded index.

1. package a model (real ViT-B-32 weights; offline, or with --test-model, the tiny test model),
2. start the native model server (multi-model-server + our handler),
3. encode the demo catalogue through /invocations in JSON Lines batches (the Batch Transform wire
   format) and index it in a folder,
4. run a few text and image queries and print the top results with their scores,
5. print the evaluation table: text -> product (each product's description as the query) and
   image -> product (store photos of the Grocery Store Dataset when ../shared is there, otherwise
   cropped, mirrored copies of the catalogue photos).
"""
import io
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import click

from clip_search import settings

TEXT_QUERIES = ["green apple", "orange juice", "oat milk", "red bell pepper", "vanilla yoghurt"]
BANNER = "!" * 78
WEIGHTS_HOST = "huggingface.co"
DEMO_DATA_ENV = "CLIP_SEARCH_DEMO_DATA"


def demo_catalogue_dir() -> Path:
    """DEMO_DATA_ENV, else the demo catalogue shipped in the package."""
    from clip_search.demo_data import GROCERY

    return Path(settings.current().demo_data or GROCERY)


def grocery_store_dir() -> Path | None:
    """The full Grocery Store Dataset (its val/ store photos), when CLIP_SEARCH_GROCERY_DIR names it
    (`make demo` points it at ../shared/datasets/grocery-store)."""
    configured = settings.current().grocery_dir
    path = Path(configured) if configured else None
    return path if path is not None and (path / "val.txt").is_file() else None


def _step(number: int, text: str) -> None:
    click.secho(f"\n== {number}/5 {text}", bold=True)


def _loud(lines: list[str]) -> None:
    click.secho(BANNER, fg="red", bold=True, err=True)
    for line in lines:
        click.secho(f"!! {line}", fg="red", bold=True, err=True)
    click.secho(BANNER, fg="red", bold=True, err=True)


def package(workdir: Path, test_model: bool) -> tuple[Path, bool]:
    """-> (model.tar.gz, is the test model). Real weights need internet; without it, fall back."""
    from clip_search.packaging.build import package_model

    if not test_model:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clip-search"
        cached = cache / "ViT-B-32-laion2b_s34b_b79k.tar.gz"
        if cached.exists():
            return cached, False
        try:
            # Fail in seconds when offline instead of sitting through the hub client's retries.
            socket.create_connection((WEIGHTS_HOST, 443), timeout=5).close()
            click.echo(f"packaging ViT-B-32 / laion2b_s34b_b79k into {cached} (downloads ~600 MB of weights once) ...")
            return package_model(cached), False
        except Exception as error:  # no internet, hub unreachable, ...
            _loud(["COULD NOT DOWNLOAD THE REAL ViT-B-32 WEIGHTS:",
                   f"{type(error).__name__}: {str(error).splitlines()[0][:150] if str(error) else ''}",
                   "FALLING BACK TO THE TINY TEST MODEL (random weights): the results below show",
                   "that the pipeline works, NOT what CLIP can find. Run with internet for real results."])
    path = package_model(workdir / "test-model.tar.gz", test_model=True)
    return path, True


def image_queries(catalogue_dir: Path, products: list) -> tuple[list, str]:
    """Labelled photo queries: the dataset's store photos, or augmented catalogue photos."""
    from PIL import Image, ImageOps

    from clip_search.search.evaluation import Query

    grocery = grocery_store_dir()
    if grocery is not None:
        by_class = {str(p.metadata.get("class_id")): p.id for p in products}
        queries = []
        for line in (grocery / "val.txt").read_text().splitlines():
            parts = [part.strip() for part in line.split(",")]
            if len(parts) >= 2 and parts[1] in by_class:
                queries.append(Query("image", str(grocery / parts[0]), {by_class[parts[1]]}, parts[0]))
        return queries, f"store photos -> product ({grocery.name}/val)"
    queries = []
    for product in products:
        with Image.open(product.image) as image:
            width, height = image.size
            crop = image.convert("RGB").crop((width // 10, height // 10, width * 9 // 10, height * 9 // 10))
            buffer = io.BytesIO()
            ImageOps.mirror(crop).save(buffer, format="JPEG", quality=85)
        queries.append(Query("image", buffer.getvalue(), {product.id}, f"{product.id} (cropped, mirrored)"))
    return queries, "edited catalogue photos -> product"


def _print_hits(label: str, hits, limit: int = 3) -> None:
    click.echo(f"  {label}")
    for rank, hit in enumerate(hits[:limit], 1):
        click.echo(f"     {rank}. {hit.score:6.3f}  {hit.title}  [{hit.id}]")


def _serve_app(index_dir: Path, model: Path, catalogue_dir: Path, port: int) -> None:
    """The demo's index in the search app, queries encoded in process by the demo's model."""
    from clip_search.app.build import open_service
    from clip_search.app.cli import run_app

    click.secho("\n== the search app: open the URL below in a browser", bold=True)
    service = open_service(str(index_dir), model=str(model), image_roots=[str(catalogue_dir)])
    run_app(service, "127.0.0.1", port, log_level="warning")


@click.command()
@click.option("--test-model", is_flag=True, help="Use the tiny random test model (offline, seconds).")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the model and the index go (default: a temporary folder, removed at the end).")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1, 256),
              help="Records per JSON Lines request to /invocations.")
@click.option("--app", "serve_app", is_flag=True,
              help="End by serving the demo's index in the search app (clip-search app) until Ctrl-C.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="With --app: the app's port on 127.0.0.1 (0: any free port).")
def demo(test_model, workdir, batch_size, serve_app, port):
    """Package a model, serve it, index the demo catalogue, search it, evaluate it (--app: then
    browse it in the search page)."""
    from clip_search.search.catalogue import read_catalogue
    from clip_search.search.client import SearchClient
    from clip_search.search.embeddings import EndpointEmbedder
    from clip_search.search.evaluation import evaluate, format_table, read_queries
    from clip_search.serving.server import ModelServer

    logging.getLogger("clip_search.encoder").setLevel(logging.ERROR)  # we say it once, loudly
    catalogue_dir = demo_catalogue_dir()
    catalogue = catalogue_dir / "products.jsonl"
    if not catalogue.is_file():
        raise click.ClickException(f"demo catalogue not found at {catalogue} (set {DEMO_DATA_ENV})")
    temporary = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="clip-search-demo-")) if temporary else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        started = time.monotonic()
        _step(1, "package the model")
        model, is_test = package(workdir, test_model)
        if is_test:
            click.secho("using the clip-search TEST MODEL (tiny, random weights): scores and rankings are "
                        "meaningless, the path is real", fg="yellow", bold=True)
        click.echo(f"model artifact: {model} ({model.stat().st_size / 1e6:.1f} MB)")

        _step(2, "start the native model server (multi-model-server + clip-search handler)")
        with ModelServer(model) as server:
            click.echo(f"serving on {server.url} (POST /invocations)")
            embedder = EndpointEmbedder(server.url)
            index_dir = workdir / "index"
            shutil.rmtree(index_dir, ignore_errors=True)
            products = list(read_catalogue(catalogue))

            _step(3, f"encode {len(products)} products through /invocations (JSON Lines, {batch_size} a request) "
                     f"and index them")
            with SearchClient(index_dir, embedder) as client:
                report = client.index_catalogue(products, batch_size=batch_size)
                click.echo(f"indexed {report.indexed} products into {index_dir} "
                           f"(model {embedder.model_id}, dim {embedder.dim}, {len(report.errors)} errors)")

                _step(4, "search")
                for text in TEXT_QUERIES:
                    _print_hits(f'text  "{text}"', client.search_text(text, k=3))
                photos, photo_label = image_queries(catalogue_dir, products)
                for query in photos[:: max(1, len(photos) // 3)][:3]:
                    data = query.value if isinstance(query.value, bytes) else Path(query.value).read_bytes()
                    _print_hits(f"photo {query.label}  (is: {next(iter(query.relevant))})", client.search_image(data, k=3))

                _step(5, "evaluate (recall@k: a relevant product among the top k; MRR: mean 1/rank)")
                queries = read_queries(catalogue_dir / "text-queries.jsonl") + photos
                results = evaluate(client, queries, catalogue_ids={p.id for p in products})
                click.echo(format_table(results, {"text": "description -> product", "image": photo_label},
                                        test_model=is_test))
        click.echo(f"\ndone in {time.monotonic() - started:.0f} s"
                   + (" with the TEST MODEL: rerun with internet for CLIP's real results" if is_test else ""))
        if not temporary:
            click.echo(f"search it again: clip-search search --index {workdir / 'index'} \"red apple\" "
                       f"--model {model}")
        if serve_app:
            _serve_app(workdir / "index", model, catalogue_dir, port)
    finally:
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
