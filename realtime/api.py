"""What the rest of Clarion calls in realtime: publish after commit, and presence.

The one module of realtime/ that delivery/ (fan-out, acks) and the admin dashboard import.
Neither it nor anything it imports imports delivery/, so the two never form an import cycle
(tests/test_realtime_delivery_seam.py; docs/architecture.md, Parts and allowed imports).
"""

from realtime.presence import connected_users_count, users_online
from realtime.publish import publish_messages, publish_read

__all__ = ["connected_users_count", "publish_messages", "publish_read", "users_online"]
