"""The stand-in's ml-commons and neural-search half: connectors that really call the model.

What runs here is what OpenSearch's plugins do (sources: the ml-commons repository,
ConnectorUtils / MLPostProcessFunction / MultiModalConnectorPreProcessFunction; neural-search's
TextImageEmbeddingProcessor and NeuralQueryBuilder; docs.opensearch.org ml-commons-plugin/api/):
  POST /_plugins/_ml/model_groups/_register, /_search, DELETE /_plugins/_ml/model_groups/ID
  POST /_plugins/_ml/connectors/_create, GET/DELETE /_plugins/_ml/connectors/ID
  POST /_plugins/_ml/models/_register (function_name remote), /ID/_deploy, /ID/_undeploy,
       GET/DELETE /_plugins/_ml/models/ID (a deployed model cannot be deleted), GET /_plugins/_ml/tasks/ID
  PUT/GET/DELETE /_ingest/pipeline/ID with `text_image_embedding` and `remove` processors
  PUT /INDEX/_mapping (`_meta` replaced, new properties added)
Predicting with a remote model: the pre-process function turns neural-search's docs [text, image]
into parameters `inputText` / `inputImage` (multimodal) or `input` (the default: a JSON list of the
docs); string parameters are JSON-escaped; the action's `request_body` template is filled
(`${parameters.NAME}` and `${parameters.NAME:-default}`, the connector's own parameters too); the
action's URL is called with its headers; the post-process function's JSONPath (`$[*]` for
`connector.post_process.default.embedding`) must give a list of lists of numbers, one tensor each;
neural-search uses the first tensor as the vector. SageMaker cannot be reached from a test, so
`endpoints` maps a SageMaker endpoint name to a URL of `clip-search serve` (the real model server):
https://runtime.sagemaker.REGION.amazonaws.com/endpoints/NAME/invocations goes to URL/invocations.
"""
from __future__ import annotations

import json
import re
import urllib.request
import uuid

SAGEMAKER_URL = re.compile(r"^https://runtime\.sagemaker\.([a-z0-9-]+)\.amazonaws\.com/endpoints/([^/]+)/invocations$")
PRE_PROCESS = {"connector.pre_process.bedrock.multimodal_embedding", "connector.pre_process.default.embedding"}
POST_PROCESS = {"connector.post_process.default.embedding": "$[*]"}
PROCESSORS = {"text_image_embedding", "remove"}


def _bad(reason, kind="illegal_argument_exception", status=400):
    from tests.standins.opensearch_standin import OpenSearchError

    return OpenSearchError(status, kind, reason)


def _write(index: str, doc_id: str, result: str = "deleted") -> dict:
    return {"_index": index, "_id": doc_id, "_version": 1, "result": result,
            "_shards": {"total": 1, "successful": 1, "failed": 0}, "_seq_no": 0, "_primary_term": 1}


def _id() -> str:
    return uuid.uuid4().hex[:20]


class MLCommons:
    def __init__(self):
        self.endpoints: dict[str, str] = {}   # SageMaker endpoint name -> model server base URL
        self.groups: dict[str, dict] = {}
        self.connectors: dict[str, dict] = {}
        self.models: dict[str, dict] = {}
        self.tasks: dict[str, dict] = {}
        self.pipelines: dict[str, dict] = {}
        self.calls: list[dict] = []           # every call to a model server: url, headers, body

    # --- routes ------------------------------------------------------------------------------------
    def route(self, method: str, parts: list[str], body, indices: dict):
        """(status, answer) for the routes above, or None when the path is not ours."""
        if parts[:2] == ["_plugins", "_ml"]:
            return self._ml(method, parts[2:], body)
        if parts[:2] == ["_ingest", "pipeline"] and len(parts) == 3:
            return self._pipeline(method, parts[2], body)
        if len(parts) == 2 and parts[1] == "_mapping" and method == "PUT":
            return self._put_mapping(indices, parts[0], body)
        return None

    def _ml(self, method, rest, body):
        if rest == ["model_groups", "_register"] and method == "POST":
            name = body.get("name")
            if not isinstance(name, str) or not name.strip():
                raise _bad("model group name can't be null or empty")
            if any(group["name"] == name for group in self.groups.values()):
                raise _bad(f"The name you provided is already being used by a model group with ID: "
                           f"{next(g for g, v in self.groups.items() if v['name'] == name)}.")
            group_id = _id()
            self.groups[group_id] = {"name": name, "description": body.get("description", "")}
            return 200, {"model_group_id": group_id, "status": "CREATED"}
        if rest == ["model_groups", "_search"] and method in ("GET", "POST"):
            wanted = ((body.get("query") or {}).get("term") or {}).get("name.keyword")
            hits = [{"_index": ".plugins-ml-model-group", "_id": g, "_score": 1.0, "_source": v}
                    for g, v in self.groups.items() if wanted in (None, v["name"])]
            return 200, {"took": 1, "timed_out": False, "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                         "hits": {"total": {"value": len(hits), "relation": "eq"}, "max_score": 1.0, "hits": hits}}
        if len(rest) == 2 and rest[0] == "model_groups" and method == "DELETE":
            if rest[1] not in self.groups:
                raise _bad(f"Failed to find model group with ID: {rest[1]}", "status_exception", 404)
            if any(m["model_group_id"] == rest[1] for m in self.models.values()):
                raise _bad("Cannot delete the model group when it has associated model versions")
            del self.groups[rest[1]]
            return 200, _write(".plugins-ml-model-group", rest[1])
        if rest == ["connectors", "_create"] and method == "POST":
            connector_id = _id()
            self.connectors[connector_id] = self._check_connector(body)
            return 200, {"connector_id": connector_id}
        if len(rest) == 2 and rest[0] == "connectors":
            connector = self.connectors.get(rest[1])
            if connector is None:
                raise _bad("Failed to find connector", "status_exception", 404)
            if method == "GET":
                return 200, {k: v for k, v in connector.items() if k != "credential"}
            if method == "DELETE":
                users = [m for m, v in self.models.items() if v["connector_id"] == rest[1]]
                if users:
                    raise _bad(f"{len(users)} models are still using this connector, please delete or update the "
                               f"models first: {users}", "status_exception", 409)
                del self.connectors[rest[1]]
                return 200, _write(".plugins-ml-connector", rest[1])
        if rest == ["models", "_register"] and method == "POST":
            return 200, self._register(body)
        if len(rest) >= 2 and rest[0] == "models":
            model = self.models.get(rest[1])
            if model is None:
                raise _bad("Failed to find model", "status_exception", 404)
            if rest[2:] == ["_deploy"] and method == "POST":
                model["model_state"] = "DEPLOYED"
                task_id = self._task(rest[1], "DEPLOY_MODEL")
                return 200, {"task_id": task_id, "task_type": "DEPLOY_MODEL", "status": "COMPLETED"}
            if rest[2:] == ["_undeploy"] and method == "POST":
                model["model_state"] = "UNDEPLOYED"
                return 200, {"standin-node": {"stats": {rest[1]: "UNDEPLOYED"}}}
            if rest[2:] == [] and method == "GET":
                return 200, {"name": model["name"], "model_group_id": model["model_group_id"], "algorithm": "REMOTE",
                             "model_state": model["model_state"], "connector_id": model["connector_id"]}
            if rest[2:] == [] and method == "DELETE":
                if model["model_state"] == "DEPLOYED":
                    raise _bad(f"Model cannot be deleted in deploying or deployed state. Try undeploy model first "
                               f"then delete: {rest[1]}", "status_exception")
                del self.models[rest[1]]
                return 200, _write(".plugins-ml-model", rest[1])
        if len(rest) == 2 and rest[0] == "tasks" and method == "GET":
            if rest[1] not in self.tasks:
                raise _bad("Failed to find task", "status_exception", 404)
            return 200, self.tasks[rest[1]]
        raise _bad(f"no handler found for uri [/_plugins/_ml/{'/'.join(rest)}] and method [{method}]",
                   "invalid_request_exception")

    @staticmethod
    def _check_connector(body: dict) -> dict:
        for key in ("name", "version", "protocol", "parameters", "credential", "actions"):
            if key not in body:
                raise _bad(f"connector {key} is missing")
        if body["protocol"] not in ("aws_sigv4", "http"):
            raise _bad("Unsupported connector protocol. Please use one of [aws_sigv4, http]")
        credential = body["credential"]
        if body["protocol"] == "aws_sigv4" and not ("roleArn" in credential or
                                                     {"access_key", "secret_key"} <= set(credential)):
            raise _bad("Missing credential: aws_sigv4 needs roleArn or access_key and secret_key")
        if body["protocol"] == "aws_sigv4" and not {"region", "service_name"} <= set(body["parameters"]):
            raise _bad("Missing parameter: region and service_name are required for aws_sigv4")
        for action in body["actions"]:
            for key in ("action_type", "method", "url"):
                if key not in action:
                    raise _bad(f"connector action {key} is missing")
            pre, post = action.get("pre_process_function"), action.get("post_process_function")
            if pre and pre.startswith("connector.") and pre not in PRE_PROCESS | {"connector.pre_process.openai.embedding"}:
                raise _bad(f"Unsupported pre_process_function {pre}")
            if post and post.startswith("connector.") and post not in POST_PROCESS:
                raise _bad(f"Unsupported post_process_function {post}")
        return json.loads(json.dumps(body))

    def _register(self, body: dict) -> dict:
        if body.get("function_name") != "remote":
            raise _bad("the stand-in registers remote models only (function_name: remote)")
        if body.get("connector_id") not in self.connectors:
            raise _bad(f"Failed to find connector {body.get('connector_id')}", "status_exception", 404)
        group_id = body.get("model_group_id")
        if group_id is None:  # ml-commons makes a group named after the model
            group_id = _id()
            self.groups[group_id] = {"name": body.get("name", "model"), "description": ""}
        elif group_id not in self.groups:
            raise _bad(f"Failed to find model group with ID: {group_id}", "status_exception", 404)
        model_id = _id()
        self.models[model_id] = {"name": body.get("name"), "connector_id": body["connector_id"],
                                 "model_group_id": group_id, "model_state": "REGISTERED"}
        return {"task_id": self._task(model_id, "REGISTER_MODEL"), "status": "CREATED", "model_id": model_id}

    def _task(self, model_id: str, kind: str) -> str:
        task_id = _id()
        self.tasks[task_id] = {"model_id": model_id, "task_type": kind, "function_name": "REMOTE",
                               "state": "COMPLETED", "worker_node": ["standin-node"], "is_async": False}
        return task_id

    # --- ingest pipelines --------------------------------------------------------------------------
    def _pipeline(self, method, pipeline_id, body):
        if method == "PUT":
            processors = body.get("processors")
            if not isinstance(processors, list):
                raise _bad("[processors] required property is missing", "parse_exception")
            for processor in processors:
                (kind, config), = processor.items()
                if kind not in PROCESSORS:
                    raise _bad(f"No processor type exists with name [{kind}]", "parse_exception")
                if kind == "text_image_embedding":
                    for key in ("model_id", "embedding", "field_map"):
                        if key not in config:
                            raise _bad(f"[{key}] required property is missing", "parse_exception")
                    if not config["field_map"] or set(config["field_map"]) - {"text", "image"}:
                        raise _bad("Unable to create the TextImageEmbedding processor with provided field name(s). "
                                   "Following names are supported [text,image]")
                if kind == "remove" and "field" not in config:
                    raise _bad("[field] required property is missing", "parse_exception")
            self.pipelines[pipeline_id] = body
            return 200, {"acknowledged": True}
        if pipeline_id not in self.pipelines:
            raise _bad(f"pipeline [{pipeline_id}] is missing", "resource_not_found_exception", 404)
        if method == "GET":
            return 200, {pipeline_id: self.pipelines[pipeline_id]}
        if method == "DELETE":
            del self.pipelines[pipeline_id]
            return 200, {"acknowledged": True}
        raise _bad(f"no handler for [{method}] on an ingest pipeline", "invalid_request_exception")

    def run_pipeline(self, pipeline_id: str, source: dict) -> dict:
        """A document through an ingest pipeline (the embedding processors call the model)."""
        pipeline = self.pipelines.get(pipeline_id)
        if pipeline is None:
            raise _bad(f"pipeline with id [{pipeline_id}] does not exist")
        source = dict(source)
        for processor in pipeline["processors"]:
            (kind, config), = processor.items()
            if kind == "remove":
                if config["field"] not in source and not config.get("ignore_missing"):
                    raise _bad(f"field [{config['field']}] not present as part of path [{config['field']}]")
                source.pop(config["field"], None)
                continue
            inputs = {}
            for key, name in (("text", "inputText"), ("image", "inputImage")):
                field = config["field_map"].get(key)
                if field is None or field not in source:
                    continue
                value = source[field]
                if not isinstance(value, str) or not value.strip():
                    raise _bad(f"Unsupported format of the field in the document, {field} value must be a non-empty "
                               f"string. Currently it is '{value}'")
                inputs[name] = value
            if inputs:
                source[config["embedding"]] = self.embed(config["model_id"], inputs.get("inputText"),
                                                         inputs.get("inputImage"))
        return source

    # --- mappings ----------------------------------------------------------------------------------
    @staticmethod
    def _put_mapping(indices: dict, name: str, body: dict):
        index = indices.get(name)
        if index is None:
            raise _bad(f"no such index [{name}]", "index_not_found_exception", 404)
        unknown = set(body) - {"_meta", "properties", "dynamic", "dynamic_templates", "_source"}
        if unknown:
            raise _bad(f"Root mapping definition has unsupported parameters: {sorted(unknown)}", "mapper_parsing_exception")
        if "_meta" in body:
            index.mappings["_meta"] = json.loads(json.dumps(body["_meta"]))
        for field, spec in (body.get("properties") or {}).items():
            existing = index.mappings["properties"].get(field)
            if existing is not None and existing.get("type") != spec.get("type"):
                raise _bad(f"mapper [{field}] cannot be changed from type [{existing.get('type')}] to "
                           f"[{spec.get('type')}]")
            index.mappings["properties"][field] = spec
        return 200, {"acknowledged": True}

    # --- predict -----------------------------------------------------------------------------------
    def embed(self, model_id: str | None, text: str | None, image: str | None) -> list[float]:
        """neural-search's inferenceSentencesMap: docs [text, image] to the model, first tensor back."""
        model = self.models.get(model_id or "")
        if model is None:
            raise _bad(f"Failed to find model {model_id}", "status_exception", 404)
        if model["model_state"] != "DEPLOYED":
            raise _bad(f"Model not ready yet. Please deploy the model first: {model_id}")
        connector = self.connectors[model["connector_id"]]
        action = next(a for a in connector["actions"] if a["action_type"] == "predict")
        docs = [text] + ([image] if image is not None else [])
        if action.get("pre_process_function") == "connector.pre_process.bedrock.multimodal_embedding":
            parameters = {"inputText": docs[0]}
            if len(docs) > 1:
                parameters["inputImage"] = docs[1]
        else:  # the default embedding pre-process: the docs as a JSON list in ${parameters.input}
            parameters = {"input": json.dumps([d for d in docs if d is not None])}
        parameters = {k: (None if v is None else v if _is_json(v) else json.dumps(v)[1:-1])
                      for k, v in parameters.items()}
        values = {**{k: str(v) for k, v in connector["parameters"].items()}, **parameters}
        body = _fill(action.get("request_body", ""), values)
        url = _fill(action["url"], values)
        found = SAGEMAKER_URL.match(url)
        if not found or found.group(2) not in self.endpoints:
            raise _bad(f"the stand-in reaches SageMaker endpoints it was given only, not {url}")
        target = self.endpoints[found.group(2)].rstrip("/") + "/invocations"
        headers = {k: _fill(v, values) for k, v in (action.get("headers") or {}).items()}
        self.calls.append({"url": url, "headers": headers, "body": body})
        request = urllib.request.Request(target, data=body.encode(), headers=headers, method=action["method"])
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                response = answer.read().decode()
        except urllib.error.HTTPError as error:
            raise _bad(f"Error from remote service: {error.read().decode()}", "status_exception", error.code) from None
        return _post_process(action.get("post_process_function"), response)[0]


def _is_json(value: str) -> bool:
    try:
        json.loads(value)
        return True
    except ValueError:
        return False


def _fill(template: str, values: dict) -> str:
    """Apache commons-text StringSubstitutor with prefix `${parameters.`: `:-` gives a default."""
    def replace(match):
        name, _, default = match.group(1).partition(":-")
        value = values.get(name)
        if value is None:
            if match.group(1).find(":-") < 0:
                return match.group(0)  # left as is, as StringSubstitutor does
            return default
        return value
    return re.sub(r"\$\{parameters\.([^}]+)\}", replace, template)


def _post_process(function: str | None, response: str) -> list[list[float]]:
    if function not in POST_PROCESS:
        raise _bad(f"the stand-in runs the default embedding post-process only, not {function}")
    try:
        data = json.loads(response)
    except ValueError:
        raise _bad(f"model response is not JSON: {response[:200]}") from None
    filtered = list(data.values()) if isinstance(data, dict) else data  # JSONPath $[*]
    if not isinstance(filtered, list):
        raise _bad("Post process function input is not a List.")
    if filtered and not isinstance(filtered[0], list):
        raise _bad("The embedding should be a non-empty List containing List of Float values.")
    if filtered and (not filtered[0] or not all(isinstance(x, (int, float)) for x in filtered[0])):
        raise _bad("The embedding should be a non-empty List containing Float values.")
    if not filtered:
        raise _bad("Empty model result produced. Expected at least [1] tensor output, but got [0]")
    return [[float(x) for x in row] for row in filtered]


def neural_to_knn(spec: dict, ml: MLCommons | None) -> dict:
    """neural-search's NeuralQueryBuilder: the text and/or image embedded by the model, then a k-NN
    query on the field with the same k / min_score / max_distance / filter."""
    if len(spec) != 1:
        raise _bad("[neural] query must name exactly one field", "parsing_exception")
    (field, params), = spec.items()
    unknown = set(params) - {"query_text", "query_image", "model_id", "k", "min_score", "max_distance", "filter",
                             "boost", "_name", "method_parameters", "rescore"}
    if unknown:
        raise _bad(f"[neural] unknown token [{sorted(unknown)[0]}]", "parsing_exception")
    if not params.get("query_text") and not params.get("query_image"):
        raise _bad("Either query text or image text must be provided for neural query")
    if not params.get("model_id"):
        raise _bad("model_id must be provided for neural query (no default model set by a search pipeline)")
    if ml is None:
        raise _bad("the ml-commons plugin is not installed")
    vector = ml.embed(params["model_id"], params.get("query_text"), params.get("query_image"))
    knn = {"vector": vector, **{k: v for k, v in params.items() if k in ("k", "min_score", "max_distance", "filter", "boost")}}
    if not any(k in knn for k in ("k", "min_score", "max_distance")):
        knn["k"] = 10  # neural-search's default k
    return {field: knn}
