"""The document of the key, token and account routes (/v1/keys/me, /v1/token/..., /v1/account/...)."""

from __future__ import annotations

from typing import Any

from app.api.openapi.blocks import (
    INT,
    KEY_ID,
    MASTER,
    OK,
    SECRET_KEY,
    STR,
    TIME,
    nullable,
    obj,
    ok_body,
    operation,
    path_param,
    query_param,
    ref,
    reply,
    request_body,
    responses,
)


def account_paths() -> dict[str, Any]:
    """The key, token and account routes.

    Long on purpose: one literal with an entry per route, read top to bottom like the route
    table; cutting it into functions would only scatter the routes.
    """
    jwt_params = [
        query_param("Kid", STR, "The key to sign for (its kid); the calling key by default."),
        query_param("ExpiresInSec", INT, "Lifetime in seconds."),
        query_param("ClientIp", STR, "Client IP(s) the token is bound to, comma-separated."),
    ]
    token_params = [
        query_param("RequestCount", INT, "Requests each token allows."),
        query_param("Lifetime", INT, "Seconds each token lives."),
        query_param("Count", INT, "How many tokens to make."),
    ]
    key_public = obj(["ok"], ok=OK)
    key_public["allOf"] = [ref("ApiKey")]
    created_key = {
        "allOf": [
            ref("ApiKey"),
            obj(
                ["ok", "key"],
                ok=OK,
                key=STR,
                signing_secret=nullable("string"),
                webhook_secret=nullable("string"),
            ),
        ]
    }
    return {
        "/v1/keys/me": {
            "get": operation(
                "The calling key and its remaining quota",
                responses(
                    {
                        "200": reply(
                            {
                                "allOf": [
                                    ref("ApiKey"),
                                    ok_body(
                                        plan=STR,
                                        max_running=nullable("integer"),
                                        rate_limits=ref("RateLimits"),
                                        storage=ref("StorageUse"),
                                    ),
                                ]
                            }
                        )
                    }
                ),
                tag="keys",
            )
        },
        "/v1/token/jwt": {
            "post": operation(
                "Mint a JWT for browsers (ConvertAPI v2)",
                responses(
                    {
                        "200": reply(
                            ok_body(token=STR, kid=STR, expires_at=TIME, client_ip=nullable("string"))
                        )
                    },
                    404,
                ),
                tag="tokens",
                params=jwt_params,
                body=request_body(obj((), Kid=STR, ExpiresInSec=INT, ClientIp=STR)),
                security=[*SECRET_KEY, *MASTER],
                description="Parameters in the query or a JSON body, names case-insensitive.",
            )
        },
        "/v1/token/create": {
            "post": operation(
                "Create access tokens (ConvertAPI v1)",
                responses(
                    {
                        "200": reply(
                            ok_body(
                                code={"const": 2000},
                                Tokens={
                                    "type": "array",
                                    "items": obj(
                                        ["Id", "RequestCount", "ValidUntil"],
                                        Id=STR,
                                        RequestCount=INT,
                                        ValidUntil=TIME,
                                    ),
                                },
                            )
                        )
                    }
                ),
                tag="tokens",
                params=token_params,
                body=request_body(obj((), RequestCount=INT, Lifetime=INT, Count=INT)),
                security=SECRET_KEY,
            )
        },
        "/v1/token/{token}": {
            "delete": operation(
                "Delete an access token",
                responses({"200": reply(ok_body(code={"const": 2001}))}, 404),
                tag="tokens",
                params=[path_param("token", STR, "The access token.")],
                security=SECRET_KEY,
            )
        },
        "/v1/account": {
            "get": operation(
                "The account",
                responses({"200": reply(ok_body(account=ref("Account")))}, 404),
                tag="account",
                security=MASTER,
            )
        },
        "/v1/account/consumption": {
            "get": operation(
                "Conversions and calls used, per key",
                responses(
                    {
                        "200": reply(
                            ok_body(
                                conversions_used=INT,
                                conversions_limit=nullable("integer"),
                                conversions_remaining=nullable("integer"),
                                rate_limits=ref("RateLimits"),
                                keys={"type": "array", "items": ref("ApiKey")},
                            )
                        )
                    },
                    404,
                ),
                tag="account",
                security=MASTER,
            )
        },
        "/v1/account/statistics": {
            "get": operation(
                "Requests and conversions per day and per conversion type",
                responses(
                    {
                        "200": reply(
                            ok_body(
                                since={"type": "string", "format": "date"},
                                days={"type": "array", "items": {"type": "object"}},
                                conversions={"type": "array", "items": {"type": "object"}},
                            )
                        )
                    }
                ),
                tag="account",
                params=[query_param("days", INT, "How many days back (default 30).")],
                security=MASTER,
            )
        },
        "/v1/account/requests": {
            "get": operation(
                "The request log, newest first",
                responses(
                    {
                        "200": reply(
                            ok_body(
                                requests={"type": "array", "items": {"type": "object"}},
                                next_cursor=nullable("string"),
                            )
                        )
                    }
                ),
                tag="account",
                params=[
                    query_param("first", INT, "Page size (default 50)."),
                    query_param("after", STR, "A next_cursor."),
                ],
                security=MASTER,
            )
        },
        "/v1/account/keys": {
            "get": operation(
                "The account's API keys",
                responses({"200": reply(ok_body(keys={"type": "array", "items": ref("ApiKey")}))}),
                tag="account",
                security=MASTER,
            ),
            "post": operation(
                "Create an API key (its secret is shown once)",
                responses({"201": reply(created_key)}),
                tag="account",
                body=request_body(ref("KeySpec"), required=True),
                security=MASTER,
            ),
        },
        "/v1/account/keys/{key_id}": {
            "patch": operation(
                "Change a key's name or restrictions",
                responses({"200": reply(key_public)}, 404),
                tag="account",
                params=[KEY_ID],
                body=request_body(ref("KeySpec"), required=True),
                security=MASTER,
            ),
            "delete": operation(
                "Revoke a key",
                responses({"200": reply(key_public)}, 404),
                tag="account",
                params=[KEY_ID],
                security=MASTER,
            ),
        },
        "/v1/account/keys/{key_id}/rotate": {
            "post": operation(
                "A new JWT-signing or webhook secret for a key (shown once)",
                responses(
                    {
                        "200": reply(
                            {"allOf": [key_public, obj(["rotated", "secret"], rotated=STR, secret=STR)]}
                        )
                    },
                    404,
                ),
                tag="account",
                params=[KEY_ID],
                body=request_body(
                    obj(["secret"], secret={"type": "string", "enum": ["jwt", "webhook"]}), required=True
                ),
                security=MASTER,
            )
        },
        "/v1/account/master-token": {
            "post": operation(
                "Replace the master token (the old one stops at once)",
                responses({"200": reply(ok_body(master_token=STR))}),
                tag="account",
                security=MASTER,
            )
        },
    }
