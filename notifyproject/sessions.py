"""Django's database sessions, ignoring a session cookie no session could have.

Django parses the octal escapes of a quoted cookie value (`"abc\\000def"`), so a NUL can reach
the session lookup, which PostgreSQL refuses: every page, API call and WebSocket with such a
cookie failed with a 500 or a 503, signed in or not. Django makes keys of lowercase letters and
digits only; any other key is treated as no session.
"""

from django.contrib.sessions.backends import db
from django.contrib.sessions.backends.base import VALID_KEY_CHARS

_VALID = frozenset(VALID_KEY_CHARS)


class SessionStore(db.SessionStore):
    def __init__(self, session_key=None):
        if session_key is not None and not _VALID.issuperset(session_key):
            session_key = None
        super().__init__(session_key)
