"""The GraphQL API: one package per feature, assembled in schema.py, served by view.py."""
