"""`clip-search index`, `clip-search search` and `clip-search eval`.

INDEX is a folder (embedded index), an http(s):// OpenSearch URL ending in the index name, or a
postgresql:// DSN (pgvector; `?table=NAME` picks the table). Queries are encoded with --model or
--endpoint when given, else with the model recorded by the index when it was built.
"""
import json
import sys

import click

from clip_search.aws_region import region_option
from clip_search.search.errors import IndexNotFoundError, QueryError, SearchError
from clip_search.search.filters import parse_filters

MODEL_ENV, ENDPOINT_ENV = "CLIP_SEARCH_MODEL", "CLIP_SEARCH_ENDPOINT"


def _encoder_options(function):
    function = click.option("--endpoint", envvar=ENDPOINT_ENV, metavar="URL_OR_NAME",
                            help=f"Encode with a running endpoint: our server's URL or a SageMaker endpoint name [env {ENDPOINT_ENV}].")(function)
    function = click.option("--model", envvar=MODEL_ENV, metavar="model.tar.gz",
                            help=f"Encode in-process with this model artifact (file or extracted folder) [env {MODEL_ENV}].")(function)
    return region_option(function)  # the endpoint's (and an s3:// or AWS OpenSearch index's) region


def _client(index: str, model: str | None, endpoint: str | None, need_encoder: bool = True):
    from clip_search.search.client import open_client

    return open_client(index, model, endpoint, need_encoder=need_encoder)


def _neural_hits(location, query_path, encoder_given, text, image, k, filters, fields, hybrid):
    """Connected mode: hits of `neural` queries (OpenSearch encodes), or None for the client path."""
    if query_path == "client" or (query_path == "auto" and encoder_given):
        return None
    if not location.startswith(("http://", "https://")):
        if query_path == "neural":
            raise click.UsageError("--query-path neural needs an OpenSearch index connected with "
                                   "`clip-search opensearch connect`")
        return None
    from clip_search.search.index.opensearch import OpenSearchIndex

    with OpenSearchIndex.from_url(location) as index:
        if index.info() is None:
            raise IndexNotFoundError(f"no index at {location}: build it with `clip-search index`")
        if not index.connected:
            if query_path == "neural":
                raise click.UsageError(f"--query-path neural: {location} is not connected "
                                       "(run `clip-search opensearch connect`)")
            return None
        if image:
            from clip_search.search.catalogue import load_image_bytes

            return index.search_neural(image=load_image_bytes(image), k=k, filters=filters, fields=("image",))
        return index.search_neural(text=text, k=k, filters=filters, fields=fields, keywords=text if hybrid else None)


def _filters(ctx, param, specs) -> dict[str, list[str]]:
    """--filter through the library's one filter grammar; its error becomes click's usage error."""
    try:
        return parse_filters(specs)
    except QueryError as error:
        raise click.BadParameter(error.message) from None


@click.command()
@click.option("--catalogue", type=click.Path(dir_okay=False), help="Products: .jsonl or .csv (id, title, image, ...).")
@click.option("--encoding", default=None, metavar="NAME",
              help="Text encoding of --catalogue (default UTF-8; e.g. latin-1, cp1252).")
@click.option("--abo-listings", metavar="GLOB", help="Amazon Berkeley Objects listings_*.json.gz (instead of --catalogue).")
@click.option("--abo-images", type=click.Path(dir_okay=False), help="ABO images/metadata/images.csv.gz.")
@click.option("--abo-image-root", metavar="DIR_OR_S3", help="ABO images/small folder or s3:// prefix.")
@click.option("--index", "index_location", required=True, help="Folder, OpenSearch URL (…/INDEX_NAME) or postgresql:// DSN.")
@_encoder_options
@click.option("--embeddings", metavar="DIR_OR_S3", help="Use Batch Transform output (*.out JSON Lines) for image embeddings.")
@click.option("--model-id", help="Model id of --embeddings when no --model/--endpoint is given.")
@click.option("--titles/--no-titles", default=True, show_default=True, help="Also index each title's text embedding.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 1024))
@click.option("--sync", is_flag=True, help="Also delete the products INDEX holds that the catalogue no longer lists.")
@click.option("--force", is_flag=True, help="Encode every product, even those unchanged since they were indexed.")
def index(catalogue, encoding, abo_listings, abo_images, abo_image_root, index_location, model, endpoint, embeddings,
          model_id, titles, batch_size, sync, force):
    """Encode a product catalogue and upsert it into INDEX (idempotent: ids are product ids).

    Incremental: a product whose photo bytes, title and model are unchanged since it was indexed
    (a content hash stored with it) is skipped, not encoded again."""
    from clip_search.search.catalogue import read_abo, read_catalogue
    from clip_search.search.embeddings import read_batch_output

    if bool(catalogue) == bool(abo_listings):
        raise click.UsageError("give --catalogue FILE or --abo-listings GLOB (with --abo-images, --abo-image-root)")
    if abo_listings and not (abo_images and abo_image_root):
        raise click.UsageError("--abo-listings needs --abo-images and --abo-image-root")
    products = read_catalogue(catalogue, encoding) if catalogue else read_abo(abo_listings, abo_images, abo_image_root)
    # Parsed in the background (big outputs) while the index opens.
    precomputed = read_batch_output(embeddings) if embeddings else None
    try:
        client = _client(index_location, model, endpoint, need_encoder=False)
        if client.embedder is None and not embeddings:
            raise click.UsageError("give --model or --endpoint (or --embeddings with --model-id and --no-titles)")
        with client:
            report = client.index_catalogue(products, titles=titles, batch_size=batch_size,
                                            image_embeddings=precomputed, model_id=model_id,
                                            incremental=not force, sync=sync)
            total = client.index.count()
    finally:
        if precomputed is not None:
            precomputed.close()
    for product_id, reason in report.errors[:20]:
        click.echo(f"  not indexed: {product_id}: {reason}", err=True)
    if len(report.errors) > 20:
        click.echo(f"  … and {len(report.errors) - 20} more", err=True)
    if report.unchanged or report.updated or sync:  # the index held products already
        click.echo(f"skipped {report.unchanged} unchanged products ({report.added} added, {report.updated} updated)")
    if sync:
        click.echo(f"deleted {report.deleted} products no longer in the catalogue")
    click.echo(f"indexed {report.indexed} of {report.products} products into {index_location} "
               f"({total} in the index, {len(report.errors)} errors)")
    if report.errors and not report.indexed and not report.unchanged:
        sys.exit(1)


@click.command()
@click.argument("query", required=False)
@click.option("--index", "index_location", required=True, help="Folder, OpenSearch URL (…/INDEX_NAME) or postgresql:// DSN.")
@click.option("--image", type=click.Path(dir_okay=False), help="Search by this photo instead of text.")
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--filter", "filters", multiple=True, metavar="FIELD=VALUE", callback=_filters,
              help="Metadata filter FIELD=VALUE (or FIELD:VALUE); repeat to combine (docs/search.md, Filters).")
@click.option("--match", type=click.Choice(["both", "image", "title"]), default="both", show_default=True,
              help="Text queries: match product images, titles, or the better of the two.")
@click.option("--hybrid", is_flag=True, help="Text queries: rank by keyword match on the title fused with vector "
              "similarity (embedded and OpenSearch indexes).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of hits {id, score, title, ..., query_path}, "
              "best first; query_path says who encoded the query: client or neural (OpenSearch).")
@click.option("--query-path", type=click.Choice(["auto", "client", "neural"]), default="auto", show_default=True,
              help="Who encodes the query: neural = OpenSearch (an index `clip-search opensearch connect` connected), "
              "client = --model/--endpoint here; auto = neural on a connected index unless --model/--endpoint is given.")
@_encoder_options
def search(query, index_location, image, k, filters, match, hybrid, as_json, query_path, model, endpoint):
    """Search INDEX by text (QUERY) or by photo (--image). Scores are cosine similarities."""
    if bool(query) == bool(image):
        raise click.UsageError('give a text QUERY or --image PATH (one of them)')
    if hybrid and image:  # an index without keyword search refuses --hybrid itself
        raise click.UsageError("--hybrid is a text search: give a QUERY, not --image")
    fields = ("image", "title") if match == "both" else (match,)
    hits = _neural_hits(index_location, query_path, bool(model or endpoint), query, image, k, filters, fields, hybrid)
    path = "client" if hits is None else "neural"
    if hits is None:
        with _client(index_location, model, endpoint) as client:
            if image:
                hits = client.search_image(image, k=k, filters=filters)
            else:
                hits = client.search_text(query, k=k, filters=filters, fields=fields, hybrid=hybrid)
    if as_json:
        click.echo(json.dumps([{**hit.to_json(), "query_path": path} for hit in hits], ensure_ascii=False, indent=2))
        return
    if not hits:
        click.echo("no results")
    for rank, hit in enumerate(hits, 1):
        click.echo(f"{rank:>3}. {hit.score:6.3f}  {hit.id}  {hit.title}")


@click.command()
@click.argument("ids", nargs=-1)
@click.option("--index", "index_location", required=True, help="Folder, OpenSearch URL (…/INDEX_NAME) or postgresql:// DSN.")
@click.option("--ids", "ids_file", type=click.Path(exists=True, dir_okay=False),
              help="A file of product ids to delete, one a line ('-' is not special: give a path).")
def delete(ids, index_location, ids_file):
    """Delete products by id (ID... and/or --ids FILE) from INDEX. Ids not in the index are ignored."""
    from clip_search.search.index import open_index

    wanted = list(ids)
    if ids_file:
        with open(ids_file, encoding="utf-8") as lines:
            wanted += [line.strip() for line in lines if line.strip()]
    if not wanted:
        raise click.UsageError("give product ids to delete (ID... or --ids FILE)")
    index = open_index(index_location)
    try:
        if index.info() is None:
            raise SearchError(f"no index at {index_location}")
        deleted = index.delete(dict.fromkeys(wanted))
        index.refresh()
        total = index.count()
    finally:
        index.close()
    click.echo(f"deleted {deleted} of {len(set(wanted))} ids from {index_location} ({total} in the index)")


@click.command("eval")
@click.option("--catalogue", type=click.Path(exists=True, dir_okay=False),
              help="The labelled catalogue (.jsonl/.csv): indexed into a private exact index for this run.")
@click.option("--index", "index_location", help="Instead: an index built from the labelled catalogue.")
@click.option("--queries", required=True, type=click.Path(exists=True, dir_okay=False),
              help='JSON Lines: {"text"|"image": ..., "relevant": [product ids]}.')
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="Write the evaluation report (JSON: figures per query kind, model, artifact sha256, "
                   "runtime, catalogue and query-set hashes and counts) here.")
@click.option("--compare-runtime", type=click.Choice(["torch"]),
              help="Also encode everything with torch fp32 from the artifact's weights; report both and the deltas.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 1024))
@_encoder_options
def eval_command(catalogue, index_location, queries, report_path, compare_runtime, as_json, batch_size, model, endpoint):
    """Retrieval quality: text->product and image->product recall@1/5/10 and MRR."""
    from clip_search.search import evaluation

    if bool(catalogue) == bool(index_location):
        raise click.UsageError("give --catalogue FILE (evaluated in a private index) or --index INDEX (one of them)")
    if catalogue:
        if not (model or endpoint):
            raise click.UsageError("--catalogue needs --model or --endpoint")
        report = evaluation.evaluate_model(catalogue, queries, model, endpoint, compare_runtime, batch_size)
    else:
        if compare_runtime:
            raise click.UsageError("--compare-runtime needs --catalogue (both runtimes encode it)")
        with _client(index_location, model, endpoint) as client:
            report = evaluation.evaluate_index(client, index_location, queries, model, batch_size)
    if report_path:
        evaluation.write_report(report, report_path)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(evaluation.format_report(report))
    if report_path:
        click.echo(f"report: {report_path}")

