"""Who is calling: API keys, end-user (client) tokens, staff sessions, scopes and permissions.

One home for identities (docs/architecture.md, Identities): `credentials` parses every
credential for every transport and checks end-user tokens; `models` holds API keys;
`api_keys` and `client_tokens` mint them; `authentication` and `permissions` are DRF's
policy classes, named in settings. Domain packages and the console ask this package; it
imports neither delivery nor realtime (tests/test_import_boundaries.py).
"""
