"""The OpenAPI 3 document, written from the app's routes and what each view declares
(saathii/api/contract.py) with the marshmallow schemas that validate and dump."""
import re

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin, resolver

from . import schemas as s
from .api.contract import ERROR_DESCRIPTIONS, contract_of
from .fields import MAX_ID

JSON = "application/json"
ALWAYS = (400, 401, 503)
REVALIDATED = ("A weak validator of what the answer says (last_seen and version aside): "
               "send it back in If-None-Match")  # any request can be malformed, unauthenticated or meet an outage
DESCRIPTION = """Favorites and presence for the Saathii voice-calling app.

Every endpoint takes `Authorization: Bearer <access_token>`. Errors are JSON:
`{"detail": "..."}`, and validation errors add `errors`, naming each field."""


def build_spec(app):
    """Return the OpenAPI document of the app's declared views as a dict.

    A view served at several paths is documented at each; its topmost route (registered
    last) is its own, the others are the mobile client's aliases."""
    spec = APISpec(
        title="Saathii presence and favorites API", version="1.0.0",
        openapi_version="3.0.3", plugins=[MarshmallowPlugin()],
        info={"description": DESCRIPTION},
        security=[{"bearerAuth": []}],
    )
    spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    spec.components.schema("Error", schema=s.ErrorSchema)
    rules = [rule for rule in app.url_map.iter_rules()
             if contract_of(app.view_functions[rule.endpoint])]
    primary = {rule.endpoint: rule for rule in rules}  # the last registered of each
    paths, used = {}, set()
    for rule in rules:
        view = app.view_functions[rule.endpoint]
        alias = rule is not primary[rule.endpoint]
        operation = _operation(rule, view, contract_of(view), alias)
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = operation
        used.update(schema for schema in (contract_of(view).get("body"),) if schema)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    for schema in used:  # rules of a whole body that no field states (see the schema)
        document["components"]["schemas"][resolver(type(schema))].update(
            getattr(schema, "OPENAPI_RULES", {}))
    return document


def _operation(rule, view, contract, alias):
    """One operation of a view: its docstring's first paragraph the summary, the rest the
    description; parameters, body and answers from its contract."""
    summary, *rest = [" ".join(part.split()) for part in (view.__doc__ or "").split("\n\n")]
    operation = {"tags": [rule.endpoint.split(".", 1)[0]],
                 "summary": summary.rstrip(".") + (" (client alias)" if alias else "")}
    if rest:
        operation["description"] = " ".join(rest)
    parameters = [{"in": "path", "name": name, "required": True, "description": description,
                   "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}
                  for name, description in contract.get("path_ids", {}).items()]
    if "arguments" in contract:
        parameters.append({"in": "query", "schema": contract["arguments"]})
    if contract.get("revalidated"):
        parameters.append({"in": "header", "name": "If-None-Match", "required": False,
                           "description": "The ETag of the answer you hold: 304 if current",
                           "schema": {"type": "string"}})
    if parameters:
        operation["parameters"] = parameters
    if "body" in contract:
        operation["requestBody"] = {"required": True,
                                    "content": {JSON: {"schema": contract["body"]}}}
    schema, headers = contract["response"]
    ok = {"description": "OK", "content": {JSON: {"schema": schema}}}
    if contract.get("revalidated"):
        headers = {**headers, "ETag": REVALIDATED}
    if headers:
        ok["headers"] = {name: {"description": text, "schema": {"type": "string"}}
                         for name, text in headers.items()}
    if contract.get("revalidated"):
        operation["responses"] = {"304": {"description": "Not Modified: the ETag in "
                                          "If-None-Match is current", "headers": {
                                              "ETag": ok["headers"]["ETag"]}}}
    operation["responses"] = {"200": ok, **operation.get("responses", {}), **{
        str(code): {"description": ERROR_DESCRIPTIONS[code],
                    "content": {JSON: {"schema": "Error"}}}
        for code in sorted({*contract["errors"], *ALWAYS})}}
    return operation
