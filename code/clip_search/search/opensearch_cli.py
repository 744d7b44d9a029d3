"""`clip-search opensearch connect | disconnect`: OpenSearch calls the model itself (connected mode)."""
import json

import click


@click.group()
def opensearch():
    """Connected mode: OpenSearch embeds documents and queries by calling the SageMaker endpoint."""
    from clip_search.extras import require

    require("opensearch", what="clip-search opensearch")


@opensearch.command()
@click.option("--index", "index_url", required=True, metavar="URL", help="The OpenSearch index, https://HOST:PORT/INDEX_NAME.")
@click.option("--endpoint", required=True, metavar="NAME", help="The SageMaker endpoint serving clip-search.")
@click.option("--role-arn", metavar="ARN", help="IAM role the cluster assumes to call the endpoint "
              "(Amazon OpenSearch Service); without it the connector carries your AWS keys (self-managed clusters).")
@click.option("--region", metavar="REGION", help="The endpoint's region [env AWS_REGION].")
@click.option("--dry-run", is_flag=True, help="Print every request instead of sending it (the index mapping is read).")
def connect(index_url, endpoint, role_arn, region, dry_run):
    """Create the connector, remote model, ingest pipeline and index metadata for neural queries."""
    from clip_search.search.opensearch_connect import connect as run

    record = run(index_url, endpoint, role_arn=role_arn, region=region, dry_run=dry_run, echo=click.echo)
    if not dry_run:
        click.echo(json.dumps(record, indent=2))


@opensearch.command()
@click.option("--index", "index_url", required=True, metavar="URL", help="The connected OpenSearch index.")
@click.option("--dry-run", is_flag=True, help="Print every request instead of sending it (the index mapping is read).")
def disconnect(index_url, dry_run):
    """Remove what `connect` made; the index and its documents stay."""
    from clip_search.search.opensearch_connect import disconnect as run

    record = run(index_url, dry_run=dry_run, echo=click.echo)
    if not dry_run:
        click.echo(f"disconnected {index_url} from model {record['model_id']}")
