"""OpenSearch's official API specification (OpenAPI 3.1), as a validator for requests and answers.

The specification lives beside the repository, at `../shared/opensearch-api-specification` (or
`CLIP_SEARCH_OPENSEARCH_SPEC`); its SOURCE.md names the commit. `Spec.check_request` says whether
OpenSearch's API has an operation for a method and path, whether the query parameters are ones that
operation (or every operation: `pretty`, `filter_path`, ...) takes, with values of their types, and
whether the body matches the operation's request schema. `_bulk` bodies are checked line by line:
each action line against `OperationContainer`, the line after an `update` against `UpdateAction`
(with `doc`, `script` or `upsert`, as OpenSearch requires), and no data line after a `delete`.
`Spec.check_response` checks an answer against the operation's response schema for its status (or
the spec's error shape for a 4xx/5xx the operation does not list).

JSON Schema validation is jsonschema's Draft 2020-12 validator with a `referencing` registry that
loads the spec's YAML files on demand, so the spec's relative `$ref`s (`../schemas/x.yaml#/...`)
resolve as written. OpenAPI's `discriminator` (mapping property types) is applied by hand: a
`oneOf` with a discriminator validates against the branch whose `type` enum names the value; other
`oneOf`s are read as `anyOf`, since the spec's alternatives are open objects that overlap.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qsl, unquote

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

REPO = Path(__file__).resolve().parents[2]
SPEC_ENV = "CLIP_SEARCH_OPENSEARCH_SPEC"
SPEC_DIR = Path(os.environ.get(SPEC_ENV, REPO.parent / "shared" / "opensearch-api-specification")).resolve()
METHODS = ("get", "put", "post", "delete", "head")
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SpecViolation(AssertionError):
    """A request or answer the OpenSearch API specification does not allow."""


def spec_commit(root: Path = SPEC_DIR) -> str:
    match = re.search(r"\b([0-9a-f]{40})\b", (root / "SOURCE.md").read_text())
    return match.group(1) if match else "unknown"


@dataclass
class Operation:
    id: str
    method: str
    template: str
    uri: str                      # where the operation object is: file URI + JSON pointer
    node: dict
    path_params: dict = field(default_factory=dict)

    def __str__(self):
        return f"{self.id} ({self.method.upper()} {self.template})"


def _pointer_escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


class Spec:
    def __init__(self, root: Path = SPEC_DIR):
        self.root = Path(root)
        self.spec = self.root / "spec"
        if not (self.spec / "namespaces" / "_core.yaml").is_file():
            raise FileNotFoundError(f"OpenSearch API specification not found at {self.root} (set {SPEC_ENV})")
        self.commit = spec_commit(self.root)
        self._documents: dict[str, dict] = {}
        self._validators: dict[str, Draft202012Validator] = {}
        self.registry = Registry(retrieve=self._retrieve)
        self.operations: list[tuple[re.Pattern, int, Operation]] = []
        for path in sorted((self.spec / "namespaces").glob("*.yaml")):
            uri = path.as_uri()
            for template, item in (self._document(uri).get("paths") or {}).items():
                regex = re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$")
                literal = sum(1 for part in template.split("/") if part and not part.startswith("{"))
                for method in METHODS:
                    if method in item:
                        pointer = f"/paths/{_pointer_escape(template)}/{method}"
                        operation = Operation(item[method]["operationId"], method, template, f"{uri}#{pointer}",
                                              item[method])
                        self.operations.append((regex, literal, operation))
        globals_uri = (self.spec / "_global_parameters.yaml").as_uri()
        self.global_parameters = {
            p["name"]: (f"{globals_uri}#/components/parameters/{_pointer_escape(key)}", p)
            for key, p in self._document(globals_uri)["components"]["parameters"].items()}

    # --- loading -------------------------------------------------------------------------------
    def _document(self, uri: str) -> dict:
        uri = uri.split("#")[0]
        if uri not in self._documents:
            path = Path(unquote(uri[len("file://"):]))
            document = yaml.load(path.read_text(), Loader=_Loader)
            self._documents[uri] = document
            self._discriminate(uri, document)
        return self._documents[uri]

    def _retrieve(self, uri: str) -> Resource:
        return DRAFT202012.create_resource(self._document(uri))

    def resolve(self, uri: str) -> tuple[str, dict]:
        """Follow OpenAPI `$ref`s from the object at `uri` (file URI + '#' + JSON pointer)."""
        while True:
            base, _, pointer = uri.partition("#")
            node = self._document(base)
            for part in [p for p in pointer.split("/") if p]:
                part = part.replace("~1", "/").replace("~0", "~")
                node = node[int(part)] if isinstance(node, list) else node[part]
            if isinstance(node, dict) and "$ref" in node:
                uri = self._join(base, node["$ref"])
                continue
            return uri, node

    # --- operations ----------------------------------------------------------------------------
    def operation(self, method: str, path: str) -> Operation:
        method = method.lower()
        matches = []
        for regex, literal, operation in self.operations:
            if operation.method != method:
                continue
            found = regex.match(path)
            if found:
                matches.append((literal, operation, {k: unquote(v) for k, v in found.groupdict().items()}))
        if not matches:
            raise SpecViolation(f"the OpenSearch API has no operation {method.upper()} {path}")
        literal, operation, params = max(matches, key=lambda m: m[0])
        return Operation(operation.id, operation.method, operation.template, operation.uri, operation.node, params)

    def parameters(self, operation: Operation) -> dict[str, tuple[str, dict]]:
        """name -> (uri, parameter object) for every parameter the operation takes."""
        out = dict(self.global_parameters)
        for index, _ in enumerate(operation.node.get("parameters") or []):
            uri, parameter = self.resolve(f"{operation.uri}/parameters/{index}")
            out[parameter["name"]] = (uri, parameter)
        return out

    # --- validation ----------------------------------------------------------------------------
    def _validator(self, schema_uri: str) -> Draft202012Validator:
        if schema_uri not in self._validators:
            self._validators[schema_uri] = Draft202012Validator({"$ref": schema_uri}, registry=self.registry)
        return self._validators[schema_uri]

    def errors(self, schema_uri: str, value) -> list[str]:
        """Schema errors of `value` against the schema at `schema_uri`, as readable lines."""
        out = []
        for error in self._validator(schema_uri).iter_errors(value):
            out.extend(self._explain(error))
        return out

    def _explain(self, error) -> list[str]:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        if error.context and error.validator in ("anyOf", "oneOf", "allOf"):
            # the branch that got furthest says most about what is wrong
            best = max(error.context, key=lambda e: len(e.absolute_path))
            if len(best.absolute_path) > len(error.absolute_path):
                return self._explain(best)
        return [f"{where}: {error.message[:300]}"]

    def _discriminate(self, uri: str, node) -> None:
        """OpenAPI's discriminated `oneOf` (e.g. mapping properties by `type`) as JSON Schema:
        the value of the discriminator picks the one branch to validate against; an unknown value
        fails. (Plain JSON Schema oneOf would demand exactly one branch match, which the spec's
        open-ended property schemas cannot give.)"""
        if isinstance(node, list):
            for item in node:
                self._discriminate(uri, item)
            return
        if not isinstance(node, dict):
            return
        for value in node.values():
            self._discriminate(uri, value)
        discriminator = node.get("discriminator")
        if "oneOf" in node and not isinstance(discriminator, dict):
            # The spec's alternatives are open objects that often overlap (delete_by_query@200: a
            # BulkByScrollResponseBase or an object with an optional `task`, which every answer is),
            # so "exactly one" cannot hold for valid answers: read oneOf as anyOf.
            alternatives = node.pop("oneOf")
            if "anyOf" in node:
                node["allOf"] = list(node.get("allOf", [])) + [{"anyOf": alternatives}]
            else:
                node["anyOf"] = alternatives
            return
        if not (isinstance(discriminator, dict) and "oneOf" in node):
            return
        name, default = discriminator["propertyName"], discriminator.get("x-default")
        branches, known = [], []
        for option in node.pop("oneOf"):
            target = self._join(uri, option["$ref"])
            for value in sorted(self._enum_of(target, name)):
                known.append(value)
                branches.append({"if": {"properties": {name: {"const": value}}, "required": [name]},
                                 "then": {"$ref": option["$ref"]}})
        if default in known:
            index = known.index(default)
            branches.append({"if": {"not": {"required": [name]}}, "then": branches[index]["then"]})
        node["allOf"] = list(node.get("allOf", [])) + branches
        node.setdefault("properties", {})[name] = {"enum": known}

    def _enum_of(self, uri: str, name: str, depth: int = 0) -> set:
        uri, schema = self.resolve(uri)
        found = set()
        prop = (schema.get("properties") or {}).get(name)
        if isinstance(prop, dict):
            found.update(prop.get("enum") or ([prop["const"]] if "const" in prop else []))
        for index in range(len(schema.get("allOf") or [])):
            if depth < 8:
                found |= self._enum_of(f"{uri}/allOf/{index}", name, depth + 1)
        return found

    @staticmethod
    def _join(base: str, ref: str) -> str:
        file = base.split("#")[0]
        if ref.startswith("#"):
            return file + ref
        target, _, fragment = ref.partition("#")
        return (Path(unquote(file[len("file://"):])).parent / target).resolve().as_uri() + "#" + fragment

    def check_request(self, method: str, path: str, query: str = "", body: bytes = b"",
                      content_type: str = "") -> Operation:
        operation = self.operation(method, path)
        problems = []
        parameters = self.parameters(operation)
        for name, value in operation.path_params.items():
            if name in parameters:
                problems += self._parameter_errors(parameters[name], name, value)
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name not in parameters or parameters[name][1].get("in") != "query":
                problems.append(f"query parameter [{name}] is not one {operation} takes")
            else:
                problems += self._parameter_errors(parameters[name], name, value)
        problems += self._body_errors(operation, body, content_type)
        if problems:
            raise SpecViolation(f"{method.upper()} {path}: {operation}: " + "; ".join(problems))
        return operation

    def _parameter_errors(self, parameter, name: str, raw: str) -> list[str]:
        uri, _ = parameter
        schema_uri = f"{uri}/schema"
        candidates = [raw]
        try:
            candidates.append(json.loads(raw))
        except ValueError:
            pass
        if "," in raw:
            candidates.append(raw.split(","))
        if any(not self.errors(schema_uri, value) for value in candidates):
            return []
        return [f"query parameter [{name}={raw}]: " + "; ".join(self.errors(schema_uri, candidates[-1]))]

    def _body_errors(self, operation: Operation, body: bytes, content_type: str) -> list[str]:
        if "requestBody" not in operation.node:
            return ["this operation takes no body"] if body else []
        request_uri, request = self.resolve(f"{operation.uri}/requestBody")
        if not body:
            return ["this operation requires a body"] if request.get("required") else []
        media = content_type.split(";")[0].strip().lower()
        content = request.get("content") or {}
        ndjson = "application/x-ndjson" in content
        if ndjson:
            return self._ndjson_errors(operation, body, media)
        if media and media not in content:
            return [f"Content-Type {media} is not one of {sorted(content)}"]
        try:
            value = json.loads(body)
        except ValueError as error:
            return [f"body is not JSON: {error}"]
        schema_uri = f"{request_uri}/content/{_pointer_escape(next(iter(content)))}/schema"
        return self.errors(schema_uri, value)

    def _ndjson_errors(self, operation: Operation, body: bytes, media: str) -> list[str]:
        if media != "application/x-ndjson":
            return [f"Content-Type {media} is not application/x-ndjson"]
        if not body.endswith(b"\n"):
            return ["an NDJSON body must end with a newline"]
        lines = body.decode("utf-8").split("\n")[:-1]
        bulk = (self.spec / "schemas" / "_core.bulk.yaml").as_uri() + "#/components/schemas/"
        problems, position = [], 0
        while position < len(lines):
            try:
                action = json.loads(lines[position])
            except ValueError:
                return [f"line {position + 1} is not JSON"]
            if operation.id.startswith("bulk"):
                problems += [f"line {position + 1} {m}" for m in self.errors(bulk + "OperationContainer", action)]
                kind = next(iter(action), None) if isinstance(action, dict) else None
                position += 1
                if kind == "delete":
                    continue
                if position >= len(lines):
                    problems.append(f"the [{kind}] action on line {position} has no data line")
                    break
                try:
                    data = json.loads(lines[position])
                except ValueError:
                    return [f"line {position + 1} is not JSON"]
                if not isinstance(data, dict):
                    problems.append(f"line {position + 1}: a data line must be an object")
                elif kind == "update":
                    problems += [f"line {position + 1} {m}" for m in self.errors(bulk + "UpdateAction", data)]
                    if not {"doc", "script", "upsert"} & set(data):
                        problems.append(f"line {position + 1}: an update needs [doc], [script] or [upsert]")
                position += 1
            else:
                position += 1
        return problems

    def check_response(self, operation: Operation, status: int, body) -> list[str]:
        """Problems of an answer (parsed JSON, or None for no body) against the spec."""
        responses = operation.node.get("responses") or {}
        key = str(status) if str(status) in responses else f"{str(status)[0]}XX" if f"{str(status)[0]}XX" in responses else None
        if key is None:
            if status >= 400:
                error_uri = (self.spec / "schemas" / "_common.yaml").as_uri() + "#/components/schemas/ErrorResponseBase"
                return [f"error answer: {m}" for m in self.errors(error_uri, body)]
            return [f"{operation} has no answer with status {status} (it has {sorted(responses)})"]
        response_uri, response = self.resolve(f"{operation.uri}/responses/{key}")
        content = response.get("content") or {}
        if not content or body is None or operation.method == "head":
            return []
        media = "application/json" if "application/json" in content else next(iter(content))
        return self.errors(f"{response_uri}/content/{_pointer_escape(media)}/schema", body)


@lru_cache(maxsize=1)
def load() -> Spec:
    return Spec()
