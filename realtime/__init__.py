"""Realtime delivery to connected clients: WebSocket, long-polling, SSE, presence, node channels.

See docs/realtime.md.
"""
