"""The OpenAPI 3.1 document of the tracking API, served at ``/v1/openapi.json``."""

from __future__ import annotations

from typing import Any

# Segment ids may be strings or numbers; null or "" is the same as leaving the field out.
_ID = {"anyOf": [{"type": "string", "maxLength": 255}, {"type": "integer"}, {"type": "null"}]}
_PRESENT_ID = {"anyOf": [{"type": "string", "minLength": 1, "maxLength": 255}, {"type": "integer"}]}
# ISO 8601; corrected for clock skew with sentAt, and refused more than 24 h in the future.
_TIME = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]}
_OBJECT = {"type": ["object", "null"], "additionalProperties": True}
_NAME = {"anyOf": [{"type": "string", "maxLength": 255}, {"type": "null"}]}

# Used only when no Basic auth is sent, and only if it is a string; anything else is ignored.
_WRITE_KEY: dict[str, Any] = {"description": "The write key, if not sent as Basic auth."}

_COMMON: dict[str, Any] = {
    "userId": _ID,
    "anonymousId": _ID,
    "messageId": _ID,
    "timestamp": _TIME,
    "originalTimestamp": _TIME,
    "sentAt": _TIME,
    "context": _OBJECT,
    "integrations": _OBJECT,
    "writeKey": _WRITE_KEY,
}


def _message(type_: str, extra: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "description": (
            "Strings anywhere in the event must not contain NUL (\\u0000) or unpaired surrogates "
            "(PostgreSQL jsonb cannot store them); an event is at most 32 KB."
        ),
        "properties": {"type": {"enum": [type_, None]}, **_COMMON, **extra},
        "required": required,
        "anyOf": [
            {"required": ["userId"], "properties": {"userId": _PRESENT_ID}},
            {"required": ["anonymousId"], "properties": {"anonymousId": _PRESENT_ID}},
        ],
        "additionalProperties": True,
    }


SCHEMAS: dict[str, dict[str, Any]] = {
    "Track": _message(
        "track",
        {"event": {"type": "string", "minLength": 1, "maxLength": 255}, "properties": _OBJECT},
        ["event"],
    ),
    "Identify": _message("identify", {"traits": _OBJECT}, []),
    "Page": _message("page", {"name": _NAME, "properties": _OBJECT}, []),
    "Screen": _message("screen", {"name": _NAME, "properties": _OBJECT}, []),
    "Alias": _message(
        "alias", {"previousId": _PRESENT_ID, "userId": _PRESENT_ID}, ["previousId", "userId"]
    ),
    "Group": _message("group", {"groupId": _PRESENT_ID, "traits": _OBJECT}, ["groupId"]),
}
SCHEMAS["BatchItem"] = {
    "oneOf": [
        {
            "allOf": [
                {"$ref": f"#/components/schemas/{name}"},
                {"required": ["type"], "properties": {"type": {"type": "string"}}},
            ]
        }
        for name in ("Track", "Identify", "Page", "Screen", "Alias", "Group")
    ]
}
SCHEMAS["Batch"] = {
    "type": "object",
    "properties": {
        "batch": {"type": "array", "items": {"$ref": "#/components/schemas/BatchItem"}},
        "sentAt": _TIME,
        "context": {"description": "Merged into each event's context when it is an object."},
        "writeKey": _WRITE_KEY,
    },
    "required": ["batch"],
    "additionalProperties": True,
}
SCHEMAS["Problem"] = {
    "type": "object",
    "properties": {
        "code": {"type": "string"},
        "path": {"type": "string"},
        "message": {"type": "string"},
        "index": {"type": "integer"},
    },
    "required": ["code", "path", "message"],
}
SCHEMAS["Success"] = {
    "type": "object",
    "properties": {"success": {"const": True}},
    "required": ["success"],
}
SCHEMAS["Error"] = {
    "type": "object",
    "properties": {"success": {"const": False}, "error": {"$ref": "#/components/schemas/Problem"}},
    "required": ["success", "error"],
}
SCHEMAS["PartialBatch"] = {
    "type": "object",
    "properties": {
        "success": {"const": False},
        "accepted": {"type": "integer"},
        "rejected": {"type": "array", "items": {"$ref": "#/components/schemas/Problem"}},
    },
    "required": ["success", "accepted", "rejected"],
}


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _errors(*statuses: int) -> dict[str, Any]:
    descriptions = {
        400: "The body or an event is invalid; `error.path` names the field.",
        401: "Missing or unknown write key.",
        413: "The body, or the body after gzip decompression, is over 512 KB.",
        415: "Unsupported Content-Encoding.",
        429: "Rate limit for this write key; retry after `Retry-After` seconds.",
        503: "The event store is unavailable; retry the same request after `Retry-After` seconds.",
    }
    return {
        str(status): {"description": descriptions[status], "content": _json("Error")}
        for status in statuses
    }


def _operation(summary: str, schema: str, *, batch: bool = False) -> dict[str, Any]:
    ok = (
        {
            "oneOf": [
                {"$ref": "#/components/schemas/Success"},
                {"$ref": "#/components/schemas/PartialBatch"},
            ]
        }
        if batch
        else {"$ref": "#/components/schemas/Success"}
    )
    body_types = {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}},
        # analytics.js sends the same JSON document labelled text/plain (no CORS preflight).
        "text/plain": {"schema": {"$ref": f"#/components/schemas/{schema}"}},
    }
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": body_types},
            "responses": {
                "200": {
                    "description": "Committed to the database.",
                    "content": {"application/json": {"schema": ok}},
                },
                **_errors(400, 401, 413, 415, 429, 503),
            },
            "security": [{"writeKey": []}, {}],
        }
    }


SCHEMAS["InAppMessage"] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "display": {"enum": ["banner", "modal"]},
        "subject": {"type": "string"},
        "body": {"type": "string"},
        "cta": {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {"label": {"type": "string"}, "url": {"type": "string"}},
                    "required": ["label", "url"],
                },
                {"type": "null"},
            ]
        },
        "sentAt": {"type": "string", "format": "date-time"},
        "seenAt": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
        "clickedAt": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
    },
    "required": ["id", "display", "subject", "body", "cta", "sentAt"],
}

_IN_APP_ID = {
    "anyOf": [{"type": "string", "maxLength": 255}, {"type": "number"}, {"type": "null"}],
    "description": "Overrides the query parameter of the same name unless null.",
}
_IN_APP_PARAMETERS = [
    {"name": "userId", "in": "query", "schema": {"type": "string", "maxLength": 255}},
    {"name": "anonymousId", "in": "query", "schema": {"type": "string", "maxLength": 255}},
    {
        "name": "X-Onramp-User-Hash",
        "in": "header",
        "description": (
            "hex HMAC-SHA256 of the userId with the in-app secret; always checked when sent, "
            "so refused (401) by a server that has no secret"
        ),
        "schema": {"type": "string"},
    },
]


def _in_app_paths() -> dict[str, Any]:
    listing = {
        "get": {
            "summary": "The in-app messages waiting for a user (newest first, at most 10)",
            "parameters": _IN_APP_PARAMETERS,
            "responses": {
                "200": {
                    "description": "Messages sent to this user and not dismissed.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "success": {"const": True},
                                    "messages": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/InAppMessage"},
                                    },
                                },
                                "required": ["success", "messages"],
                            }
                        }
                    },
                },
                **_errors(400, 401, 429),
            },
            "security": [{"writeKey": []}, {}],
        }
    }
    outcome = {
        "post": {
            "summary": "Report that the user saw, clicked or dismissed a message",
            "parameters": [
                {
                    "name": "id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                },
                {
                    "name": "outcome",
                    "in": "path",
                    "required": True,
                    "schema": {"enum": ["seen", "clicked", "dismissed"]},
                },
                *_IN_APP_PARAMETERS,
            ],
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {"userId": _IN_APP_ID, "anonymousId": _IN_APP_ID},
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "Recorded (the first report of each outcome counts).",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "success": {"const": True},
                                    "recorded": {"type": "boolean"},
                                },
                                "required": ["success", "recorded"],
                            }
                        }
                    },
                },
                "404": {"description": "No such message for this user.", "content": _json("Error")},
                **_errors(400, 401, 413, 429),
            },
            "security": [{"writeKey": []}, {}],
        }
    }
    return {"/v1/in-app/messages": listing, "/v1/in-app/messages/{id}/{outcome}": outcome}


SCHEMAS["BrowserSettings"] = {
    "type": "object",
    "description": "The part of Segment's CDN settings that analytics.js reads.",
    "properties": {
        "integrations": {
            "type": "object",
            "properties": {
                "Segment.io": {
                    "type": "object",
                    "properties": {
                        "apiKey": {"type": "string"},
                        "apiHost": {
                            "type": "string",
                            "description": "host[:port][/prefix]/v1, without a scheme",
                        },
                        "protocol": {"enum": ["http", "https"]},
                    },
                    "required": ["apiKey", "apiHost", "protocol"],
                }
            },
            "required": ["Segment.io"],
        },
        "metrics": {"type": "object"},
    },
    "required": ["integrations"],
}

# Where analytics.js posts: {protocol}://{apiHost}/ + the first letter of the call's type (and /b
# for a batch in its batching mode).
_ANALYTICS_JS_PATHS = {
    "t": "track",
    "i": "identify",
    "p": "page",
    "s": "screen",
    "a": "alias",
    "g": "group",
}


def _analytics_js_paths() -> dict[str, Any]:
    settings_operation = {
        "get": {
            "summary": "The settings document analytics.js loads from its cdnURL",
            "parameters": [
                {"name": "writeKey", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {
                    "description": "Where to send events: this Onramp. Cacheable, with an ETag.",
                    "content": _json("BrowserSettings"),
                },
                "304": {"description": "Not modified (If-None-Match)."},
                "404": {"description": "No active source has this key.", "content": _json("Error")},
            },
        }
    }
    short = {
        f"/v1/{letter}": _operation(f"analytics.js's path for /v1/{name}", name.title())
        for letter, name in _ANALYTICS_JS_PATHS.items()
    }
    short["/v1/b"] = _operation("analytics.js's path for /v1/batch", "Batch", batch=True)
    return {"/v1/projects/{writeKey}/settings": settings_operation, **short}


def openapi_document(server_url: str) -> dict[str, Any]:
    paths = {
        "/v1/track": _operation("Record an action a user took", "Track"),
        "/v1/identify": _operation("Tie a user to their traits", "Identify"),
        "/v1/page": _operation("Record a page view", "Page"),
        "/v1/screen": _operation("Record a mobile screen view", "Screen"),
        "/v1/alias": _operation("Join two ids of one user", "Alias"),
        "/v1/group": _operation("Associate a user with a group", "Group"),
        "/v1/batch": _operation("Send many events at once", "Batch", batch=True),
        "/v1/import": _operation(
            "Replay history: stored like /v1/batch, never starts a rule", "Batch", batch=True
        ),
        **_in_app_paths(),
        **_analytics_js_paths(),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Onramp tracking API",
            "version": "1",
            "description": (
                "Segment-compatible. Authenticate with HTTP Basic (write key as user name, empty "
                "password) or `writeKey` in the body. A 2xx means the events are committed; "
                "`messageId` makes a call idempotent."
            ),
        },
        "servers": [{"url": server_url.rstrip("/")}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"writeKey": {"type": "http", "scheme": "basic"}},
        },
    }
