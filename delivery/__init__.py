"""Notifications, their deliveries on every channel, providers and the senders' API keys.

See docs/architecture.md for the flow of one notification.
"""
