"""Webhooks and Django signals: what happened to deliveries, reads and devices, told to product backends.

See docs/webhooks.md for the contract and docs/architecture.md for where events come from.
"""
