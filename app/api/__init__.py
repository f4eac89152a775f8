"""The transports: REST /v1 and GraphQL. Each parses, calls one service, renders."""
