"""Who a realtime connection (WebSocket, poll, SSE) belongs to.

Credentials are read and checked by notifyproject/identities/credentials.py, as for the rest of the API.
"""

from urllib.parse import parse_qs

from channels.auth import get_user
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.conf import settings
from django.http.request import split_domain_port, validate_host

from notifyproject.identities import credentials
from notifyproject.scope_answers import header_value, site_scheme
from realtime.node import RecentToken, get_node


def query_param(scope, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin1")).get(name)
    return values[0] if values else None


def origin_allowed_for_session(scope) -> bool:
    """A cookie rides along on cross-site sockets, so session sockets must come from this site's
    own origin: the same scheme, host and port as the page's (as Django's CSRF origin check),
    or one listed in CSRF_TRUSTED_ORIGINS. A host alone is not enough: another port on the same
    host is another site."""
    origin = header_value(scope, b"origin")
    if origin is None:
        return True  # not a browser: no ambient cookie risk
    origin = origin.strip().lower()
    if origin in {trusted.lower() for trusted in getattr(settings, "CSRF_TRUSTED_ORIGINS", [])}:
        return True
    host = (header_value(scope, b"host") or "").strip().lower()
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    return origin == f"{site_scheme(scope)}://{host}"


class SessionsForCookieSockets:
    """Channels' cookie and session middleware, only for sockets that bring no token.

    A token socket never reads the session (authenticate_scope), and the two middlewares'
    per-connection wrappers and scope copies cost ~2 KB of every open socket (W3, measured
    with tracemalloc).
    """

    def __init__(self, inner):
        self.inner = inner
        self.with_session = CookieMiddleware(SessionMiddleware(inner))

    async def __call__(self, scope, receive, send):
        app = self.inner if credentials.scope_token(scope) else self.with_session
        return await app(scope, receive, send)


async def authenticate_scope(scope) -> tuple[object | None, credentials.TokenIdentity | None]:
    """(user, token identity) of a token socket, (user, None) of a session one; user None if neither.

    Token connections may come from any origin (the embedding web app's); session ones only
    from this site's hosts. A token a connection closed on this node presented recently is
    taken without a query (the node re-checks those as it does open ones: realtime/node.py).
    """
    token = credentials.scope_token(scope)
    if token:
        return await token_caller(token)
    if "session" in scope and origin_allowed_for_session(scope):
        user = await get_user(scope)
        if user.is_authenticated and user.is_active:
            return user, None
    return None, None


async def token_caller(token: str) -> tuple[object | None, credentials.TokenIdentity | RecentToken | None]:
    """(user, identity) of an end-user token, or (None, None). A token a connection (a socket, a
    poll) closed on this node presented recently is taken without a query; others are checked
    together with the node's other concurrent callers, one query and one thread hop per batch."""
    node = get_node()
    known = node.recent_token(token)
    if known is not None:
        return known.user, known
    identity = await node.token_lookup.get(token)
    return (identity.user, identity) if identity else (None, None)


async def authenticate_request(request) -> tuple[object | None, credentials.TokenIdentity | None]:
    """The same for a long-poll or event-stream request: its token, else this site's session."""
    try:
        token = credentials.request_token(request)
    except credentials.MalformedCredentialsError:
        return None, None
    if token:
        return await token_caller(token)
    user = await request.auser()
    if user.is_authenticated and user.is_active:
        return user, None
    return None, None
