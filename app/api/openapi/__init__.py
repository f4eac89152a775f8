"""The OpenAPI 3.1 description of the REST API, served at GET /v1/openapi.json.

Every /v1 route and the probes are described here; tests/api/rest/test_openapi.py compares the
document with the application's route table, so a new route without a description fails.
GraphQL describes itself (introspection); the /convertapi/ routes speak ConvertAPI's
protocol, which ConvertAPI documents, and are left out.
"""
