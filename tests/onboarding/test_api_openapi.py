"""DESIGN §3.1: an OpenAPI 3.1 document at /v1/openapi.json describing every endpoint."""

from __future__ import annotations

import pytest
from django.test import Client

from .test_api_batch import VALID

ENDPOINTS = ["track", "identify", "page", "screen", "alias", "group", "batch", "import"]
# analytics.js's one-letter paths for the same endpoints.
SHORT_PATHS = ["t", "i", "p", "s", "a", "g", "b"]


@pytest.fixture
def document(db) -> dict:
    response = Client().get("/v1/openapi.json")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    return response.json()


def test_the_document_is_valid_openapi_3_1(document):
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(document)  # raises on any violation of the 3.1 schema


def test_the_document_declares_3_1_and_a_server(document):
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"] and document["info"]["version"]
    assert document["servers"][0]["url"] == "http://testserver"


def test_every_endpoint_is_listed_as_a_post_with_its_responses(document):
    tracking = {f"/v1/{e}" for e in ENDPOINTS + SHORT_PATHS}
    in_app = {"/v1/in-app/messages", "/v1/in-app/messages/{id}/{outcome}"}
    browser_settings = "/v1/projects/{writeKey}/settings"
    assert set(document["paths"]) == tracking | in_app | {browser_settings}
    assert {"200", "404"} <= set(document["paths"][browser_settings]["get"]["responses"])
    assert set(document["paths"]["/v1/in-app/messages"]) == {"get"}
    assert {"200", "401", "404"} <= set(
        document["paths"]["/v1/in-app/messages/{id}/{outcome}"]["post"]["responses"]
    )
    for path in tracking:
        operation = document["paths"][path]["post"]
        assert {"application/json", "text/plain"} <= set(operation["requestBody"]["content"]), path
        assert {"200", "400", "401", "413", "429", "503"} <= set(operation["responses"]), path


def test_every_reference_resolves(document):
    schemas = document["components"]["schemas"]

    def refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    found = set(refs(document))
    assert found
    for ref in found:
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref


def test_write_key_auth_is_declared(document):
    assert document["components"]["securitySchemes"]["writeKey"] == {
        "type": "http",
        "scheme": "basic",
    }


def test_the_message_schemas_accept_the_valid_examples(document):
    jsonschema = pytest.importorskip("jsonschema")
    schemas = document["components"]["schemas"]
    names = {
        "track": "Track",
        "identify": "Identify",
        "page": "Page",
        "screen": "Screen",
        "alias": "Alias",
        "group": "Group",
    }
    for event_type, payload in VALID.items():
        schema = {**schemas[names[event_type]], "components": document["components"]}
        jsonschema.Draft202012Validator(schema).validate(payload)
    batch_schema = {"$ref": "#/components/schemas/Batch", "components": document["components"]}
    jsonschema.Draft202012Validator(batch_schema).validate({"batch": list(VALID.values())})
