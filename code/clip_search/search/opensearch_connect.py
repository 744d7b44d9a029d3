"""Connected mode: OpenSearch calls the model itself (`clip-search opensearch connect / disconnect`).

`connect` makes, through ml-commons and neural-search, everything a cluster needs to embed on its own:
  1. a model group (`clip-search-INDEX`), unless one of that name is there already;
  2. a connector to the SageMaker endpoint: SigV4 (`aws_sigv4`, service `sagemaker`) with the role in
     `credential.roleArn` (Amazon OpenSearch Service) or the caller's AWS keys (self-managed clusters),
     the request body template of the handler's ml-commons format, ml-commons' multimodal pre-process
     function (it turns what neural-search sends into `inputText` / `inputImage`) and its default
     embedding post-process function (it reads our `[[embedding]]` answer; docs/serving.md);
  3. a remote model on that connector, registered and deployed;
  4. an ingest pipeline (`clip-search-INDEX`) whose `text_image_embedding` processors embed a document's
     `title` into `title_embedding` and its base64 `image_base64` into `image_embedding`, then drop
     `image_base64` so the photo's bytes are not stored;
  5. the ids of all of these in the index's `_meta.clip_search.connected`, which is how `clip-search
     search` and the app know to send `neural` queries.
`disconnect` removes them in reverse order. With `dry_run`, the index mapping is read (to know what to
record) and every request is printed instead of sent; ids the cluster would assign show as <...>.
The ml-commons request shapes: docs.opensearch.org ml-commons-plugin/api/ and the ml-commons repository's
docs/remote_inference_blueprints/ (sagemaker and titan multimodal blueprints).
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from urllib.parse import quote

from clip_search import content_types
from clip_search.search.errors import SearchError
from clip_search.search.index.opensearch import META_KEY, VECTOR_FIELDS, OpenSearchIndex

ML_COMMONS_MEDIA_TYPE = content_types.ML_COMMONS
REQUEST_BODY = '{"inputText": "${parameters.inputText:-null}", "inputImage": "${parameters.inputImage:-null}"}'
PRE_PROCESS = "connector.pre_process.bedrock.multimodal_embedding"
POST_PROCESS = "connector.post_process.default.embedding"
IMAGE_SOURCE_FIELD = "image_base64"  # where a document sent through the pipeline carries its photo
DEPLOY_TIMEOUT = 120.0


def resource_name(index: str) -> str:
    return f"clip-search-{index}"


def endpoint_url(endpoint: str, region: str) -> str:
    return f"https://runtime.sagemaker.{region}.amazonaws.com/endpoints/{quote(endpoint, safe='')}/invocations"


def connector_body(endpoint: str, region: str, role_arn: str | None = None,
                   credentials: dict | None = None) -> dict:
    """The connector to a SageMaker endpoint serving clip-search's handler."""
    if role_arn:
        credential = {"roleArn": role_arn}
    elif credentials:
        credential = dict(credentials)
    else:
        raise SearchError("the connector needs --role-arn (Amazon OpenSearch Service) or AWS credentials "
                          "in the environment (self-managed clusters)")
    return {
        "name": f"clip-search: SageMaker endpoint {endpoint}",
        "description": "CLIP text and image embeddings from a clip-search SageMaker endpoint",
        "version": 1,
        "protocol": "aws_sigv4",
        # input_docs_processed_step_size 2: a [text, image] pair from neural-search is one call
        "parameters": {"region": region, "service_name": "sagemaker", "input_docs_processed_step_size": 2},
        "credential": credential,
        "actions": [{
            "action_type": "predict",
            "method": "POST",
            "url": endpoint_url(endpoint, region),
            "headers": {"content-type": ML_COMMONS_MEDIA_TYPE, "accept": ML_COMMONS_MEDIA_TYPE},
            "request_body": REQUEST_BODY,
            "pre_process_function": PRE_PROCESS,
            "post_process_function": POST_PROCESS,
        }],
    }


def pipeline_body(model_id: str) -> dict:
    return {
        "description": "clip-search: the cluster embeds titles and photos with the connected CLIP model",
        "processors": [
            {"text_image_embedding": {"model_id": model_id, "embedding": VECTOR_FIELDS["title"],
                                      "field_map": {"text": "title"}}},
            {"text_image_embedding": {"model_id": model_id, "embedding": VECTOR_FIELDS["image"],
                                      "field_map": {"image": IMAGE_SOURCE_FIELD}}},
            {"remove": {"field": IMAGE_SOURCE_FIELD, "ignore_missing": True}},
        ],
    }


def connected(index: OpenSearchIndex) -> dict | None:
    """The index's connection record (`_meta.clip_search.connected`), or None."""
    meta = _meta(index)
    return meta.get("connected") if meta else None


def _meta(index: OpenSearchIndex) -> dict | None:
    try:
        mapping = index.client.indices.get_mapping(index=index.name)
    except Exception as error:
        raise SearchError(f"OpenSearch {index.location}: reading the mapping of {index.name}: {error}") from None
    return next(iter(mapping.values()))["mappings"].get("_meta", {}).get(META_KEY)


class _Cluster:
    """Sends (or, dry-run, prints) one request at a time; errors name the step."""

    PLACEHOLDERS = {"model_groups/_register": {"model_group_id": "<model_group_id>", "status": "CREATED"},
                    "connectors/_create": {"connector_id": "<connector_id>"},
                    "models/_register": {"model_id": "<model_id>", "task_id": "<task_id>", "status": "CREATED"},
                    "_deploy": {"task_id": "<task_id>", "task_type": "DEPLOY_MODEL", "status": "COMPLETED"}}

    def __init__(self, client, dry_run: bool, echo: Callable[[str], None]):
        self.client, self.dry_run, self.echo = client, dry_run, echo

    def __call__(self, step: str, method: str, path: str, body=None, ok_statuses=()):
        if self.dry_run:
            shown = "" if body is None else "\n" + json.dumps(_redacted(body), indent=2)
            self.echo(f"{method} {path}{shown}")
            return next((answer for key, answer in self.PLACEHOLDERS.items() if path.endswith(key)),
                        {"acknowledged": True})
        from opensearchpy.exceptions import TransportError

        try:
            return self.client.transport.perform_request(method, path, body=body)
        except TransportError as error:
            if error.status_code in ok_statuses:
                return None
            raise SearchError(f"{step}: {method} {path} answered HTTP {error.status_code}: "
                              f"{_reason(error)}") from None


def _reason(error) -> str:
    info = error.info if isinstance(error.info, dict) else {}
    inner = info.get("error")
    if isinstance(inner, dict):
        return f"{inner.get('type', '')}: {inner.get('reason', '')}".strip(": ")
    return str(inner or error.error)


def _redacted(body):
    if isinstance(body, dict):
        return {k: ("***" if k in ("secret_key", "session_token", "access_key") else _redacted(v))
                for k, v in body.items()}
    if isinstance(body, list):
        return [_redacted(v) for v in body]
    return body


def _region(region: str | None) -> str:
    found = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not found:
        import boto3

        found = boto3.Session().region_name
    if not found:
        raise SearchError("the SageMaker endpoint's region is unknown: pass --region or set AWS_REGION")
    return found


def _aws_keys() -> dict | None:
    import boto3

    credentials = boto3.Session().get_credentials()
    if credentials is None:
        return None
    frozen = credentials.get_frozen_credentials()
    keys = {"access_key": frozen.access_key, "secret_key": frozen.secret_key}
    if frozen.token:
        keys["session_token"] = frozen.token
    return keys


def connect(index_url: str, endpoint: str, role_arn: str | None = None, region: str | None = None,
            dry_run: bool = False, echo: Callable[[str], None] = print,
            deploy_timeout: float = DEPLOY_TIMEOUT) -> dict:
    """Connect the index at `index_url` to the SageMaker endpoint `endpoint`; returns the record
    stored in the index's `_meta` (with placeholders on a dry run)."""
    index = OpenSearchIndex.from_url(index_url)
    try:
        meta = _meta(index)
        if meta is None:
            raise SearchError(f"OpenSearch index {index.name} was not made by clip-search (no _meta.{META_KEY})")
        if meta.get("connected"):
            raise SearchError(f"index {index.name} is already connected (model {meta['connected']['model_id']}); "
                              "run `clip-search opensearch disconnect` first")
        region = _region(region)
        body = connector_body(endpoint, region, role_arn, None if role_arn else _aws_keys())
        send = _Cluster(index.client, dry_run, echo)
        name = resource_name(index.name)
        group = send("registering the model group", "POST", "/_plugins/_ml/model_groups/_register",
                     {"name": name, "description": f"clip-search models for index {index.name}"}, ok_statuses=(400,))
        created_group = group is not None
        if group is None:  # the name is taken: reuse that group (and leave it on disconnect)
            found = send("finding the model group", "POST", "/_plugins/_ml/model_groups/_search",
                         {"query": {"term": {"name.keyword": name}}, "size": 1})
            hits = (found or {}).get("hits", {}).get("hits", [])
            if not hits:
                raise SearchError(f"registering the model group {name} failed and no group of that name exists")
            group = {"model_group_id": hits[0]["_id"]}
        group_id = group["model_group_id"]
        connector_id = send("creating the connector", "POST", "/_plugins/_ml/connectors/_create", body)["connector_id"]
        registered = send("registering the remote model", "POST", "/_plugins/_ml/models/_register", {
            "name": f"clip-search {endpoint}", "function_name": "remote", "model_group_id": group_id,
            "connector_id": connector_id, "description": f"CLIP on SageMaker endpoint {endpoint} ({region})"})
        model_id = registered.get("model_id") or _wait(send, registered["task_id"], deploy_timeout)["model_id"]
        deployed = send("deploying the model", "POST", f"/_plugins/_ml/models/{model_id}/_deploy")
        if deployed.get("status") != "COMPLETED":
            _wait(send, deployed["task_id"], deploy_timeout)
        send("creating the ingest pipeline", "PUT", f"/_ingest/pipeline/{name}", pipeline_body(model_id))
        record = {"model_id": model_id, "connector_id": connector_id, "model_group_id": group_id,
                  "ingest_pipeline": name, "endpoint": endpoint, "region": region,
                  "image_source_field": IMAGE_SOURCE_FIELD, "created_model_group": created_group}
        send("recording the model in the index", "PUT", f"/{index.name}/_mapping",
             {"_meta": {META_KEY: {**meta, "connected": record}}})
        return record
    finally:
        index.close()


def _wait(send: _Cluster, task_id: str, timeout: float) -> dict:
    """Poll an ml-commons task until it completes (remote models deploy in seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        task = send("waiting for the ml-commons task", "GET", f"/_plugins/_ml/tasks/{task_id}")
        state = task.get("state")
        if state == "COMPLETED":
            return task
        if state in ("FAILED", "CANCELLED", "COMPLETED_WITH_ERROR"):
            raise SearchError(f"ml-commons task {task_id} {state.lower()}: {task.get('error', 'no reason given')}")
        if time.monotonic() > deadline:
            raise SearchError(f"ml-commons task {task_id} did not complete within {timeout:.0f} s (state {state})")
        time.sleep(0.5)


def disconnect(index_url: str, dry_run: bool = False, echo: Callable[[str], None] = print) -> dict:
    """Undo `connect`: the index forgets the model, then the pipeline, model, connector and model
    group go (what is already gone is not an error, so a half-done disconnect can run again)."""
    index = OpenSearchIndex.from_url(index_url)
    try:
        meta = _meta(index)
        record = (meta or {}).get("connected")
        if not record:
            raise SearchError(f"index {index.name} is not connected")
        send = _Cluster(index.client, dry_run, echo)
        rest = {k: v for k, v in meta.items() if k != "connected"}
        send("forgetting the model in the index", "PUT", f"/{index.name}/_mapping", {"_meta": {META_KEY: rest}})
        send("deleting the ingest pipeline", "DELETE", f"/_ingest/pipeline/{record['ingest_pipeline']}",
             ok_statuses=(404,))
        send("undeploying the model", "POST", f"/_plugins/_ml/models/{record['model_id']}/_undeploy", ok_statuses=(404,))
        send("deleting the model", "DELETE", f"/_plugins/_ml/models/{record['model_id']}", ok_statuses=(404,))
        send("deleting the connector", "DELETE", f"/_plugins/_ml/connectors/{record['connector_id']}",
             ok_statuses=(404,))
        if record.get("created_model_group"):
            send("deleting the model group", "DELETE", f"/_plugins/_ml/model_groups/{record['model_group_id']}",
                 ok_statuses=(404,))
        return record
    finally:
        index.close()
