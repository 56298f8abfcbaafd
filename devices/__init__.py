"""End users' devices, push tokens, topic subscriptions and end-user authentication.

See docs/architecture.md for how these feed delivery.
"""
