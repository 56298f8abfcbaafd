"""Realtime delivery to connected browsers: WebSocket, long-polling, SSE and presence.

See docs/architecture.md.
"""
