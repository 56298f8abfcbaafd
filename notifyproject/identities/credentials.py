"""Who a request or a realtime connection is: the one place that reads credentials.

Every transport presents an end-user token its own way (`Authorization: Token` on HTTP, a
`Sec-WebSocket-Protocol` entry on browser WebSockets, `?token=` kept for older clients);
this module parses all of them, checks tokens against knox's hashed store, and draws the
line between end users and staff: staff powers come with this site's session only, never
with an end-user token, whoever its user is. See docs/security.md.
"""

import binascii
from dataclasses import dataclass
from datetime import datetime
from hmac import compare_digest
from urllib.parse import parse_qs

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone
from knox.auth import TokenAuthentication
from knox.crypto import hash_token
from knox.models import AuthToken
from knox.settings import CONSTANTS, knox_settings
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import AuthenticationFailed

TOKEN_SCHEME = "Token"  # Authorization: Token <end-user token>
API_KEY_SCHEME = "Bearer"  # Authorization: Bearer <API key>
TOKEN_QUERY_PARAM = "token"
# Browsers cannot set headers on a WebSocket; they can offer subprotocols. The JS client
# offers [WS_SUBPROTOCOL, WS_TOKEN_SUBPROTOCOL_PREFIX + token] and the server selects
# WS_SUBPROTOCOL, so the token is never echoed and never part of a logged URL.
WS_SUBPROTOCOL = "clarion.v1"
WS_TOKEN_SUBPROTOCOL_PREFIX = "clarion.token."
# Token digests per revocation query (open streams re-check theirs; see realtime/node.py).
TOKEN_CHECK_CHUNK = 1000
HEX_DIGITS = b"0123456789abcdefABCDEF"  # knox's digests: what may go unquoted into an array literal


class MalformedCredentialsError(ValueError):
    """The right scheme, but not a well-formed credential (no key, or spaces in it)."""


@dataclass(frozen=True)
class TokenIdentity:
    """An end user authenticated by a token: the user, and what identifies the token later."""

    user: object
    auth_token: AuthToken

    @property
    def digest(self) -> str:
        return self.auth_token.digest

    @property
    def expires_at(self) -> datetime | None:
        return self.auth_token.expiry


# -- parsing, per transport ----------------------------------------------------------------


def authorization_credentials(header: str | bytes | None, scheme: str) -> str | None:
    """The credentials of `Authorization: <scheme> <credentials>`; None for another scheme."""
    if isinstance(header, bytes):
        header = header.decode("latin1")
    parts = (header or "").split()
    if not parts or parts[0].lower() != scheme.lower():
        return None
    if len(parts) != 2:
        raise MalformedCredentialsError(f"Invalid Authorization header: use '{scheme} <credentials>'.")
    return parts[1]


def token_from_query(query_string: str | bytes) -> str | None:
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin1")
    values = parse_qs(query_string).get(TOKEN_QUERY_PARAM)
    return values[0] if values and values[0] else None


def token_from_subprotocols(subprotocols) -> str | None:
    for subprotocol in subprotocols or ():
        if subprotocol.startswith(WS_TOKEN_SUBPROTOCOL_PREFIX):
            return subprotocol[len(WS_TOKEN_SUBPROTOCOL_PREFIX) :] or None
    return None


def request_token(request) -> str | None:
    """An HTTP request's end-user token: `Authorization: Token`, else `?token=` (older clients).

    Raises MalformedCredentialsError for a Token header without a well-formed key.
    """
    token = authorization_credentials(request.headers.get("Authorization"), TOKEN_SCHEME)
    return token or token_from_query(request.META.get("QUERY_STRING", ""))


def scope_token(scope) -> str | None:
    """A WebSocket's end-user token: its subprotocol entry, `Authorization: Token`, or `?token=`.

    A malformed Token header counts as no token from the header (the socket is then refused).
    """
    token = token_from_subprotocols(scope.get("subprotocols"))
    if token:
        return token
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            try:
                token = authorization_credentials(value, TOKEN_SCHEME)
            except MalformedCredentialsError:
                token = None
            if token:
                return token
    return token_from_query(scope.get("query_string", b""))


def selected_subprotocol(scope) -> str | None:
    """The subprotocol the server answers with: ours when offered, never the token entry."""
    return WS_SUBPROTOCOL if WS_SUBPROTOCOL in (scope.get("subprotocols") or ()) else None


# -- checking ------------------------------------------------------------------------------


class _KnoxTokens(TokenAuthentication):
    """knox's hashed, constant-time token check, minus its sweep of the user's other tokens.

    knox deletes every expired token of the user on each request, a query per token on the
    hot path; here an expired token is simply refused (and purged by the retention task).
    """

    def _cleanup_token(self, auth_token) -> bool:
        return auth_token.expiry is not None and auth_token.expiry < timezone.now()


def authenticate_token(token: str) -> TokenIdentity | None:
    """The active user an end-user token belongs to, or None (unknown, expired, inactive user)."""
    if "\x00" in token:  # PostgreSQL refuses NUL in a text parameter: no token holds one
        return None
    try:
        user, auth_token = _KnoxTokens().authenticate_credentials(token.encode())
    except (AuthenticationFailed, UnicodeError):
        return None
    return TokenIdentity(user=user, auth_token=auth_token)


def authenticate_tokens(tokens) -> dict[str, TokenIdentity]:
    """authenticate_token for many tokens in one query (a node's concurrent WebSocket handshakes):
    knox's check, token by token (its key prefix, then its digest compared in constant time)."""
    tokens = [token for token in tokens if "\x00" not in token]
    candidates: dict[str, list[AuthToken]] = {}
    prefixes = {token[: CONSTANTS.TOKEN_KEY_LENGTH] for token in tokens}
    for auth_token in AuthToken.objects.filter(token_key__in=prefixes).select_related("user"):
        candidates.setdefault(auth_token.token_key, []).append(auth_token)
    found: dict[str, TokenIdentity] = {}
    check = _KnoxTokens()
    for token in tokens:
        for auth_token in candidates.get(token[: CONSTANTS.TOKEN_KEY_LENGTH], ()):
            if check._cleanup_token(auth_token):
                continue
            try:
                digest = hash_token(token)
            except (TypeError, binascii.Error, UnicodeError):
                break
            if compare_digest(digest, auth_token.digest):
                if knox_settings.AUTO_REFRESH and auth_token.expiry:
                    check.renew_token(auth_token)
                if auth_token.user.is_active:
                    found[token] = TokenIdentity(user=auth_token.user, auth_token=auth_token)
                break
    return found


def invalid_token_digests(digests) -> set[str]:
    """Which of these token digests no longer authenticate (deleted, expired, or the user inactive).

    On PostgreSQL in one query, the digests as one array literal (knox's digests are hex, and
    anything else is no digest of ours): a realtime node asks about all its open tokens every
    30 s, and the ORM's `IN` list of 1,000 placeholders a query, at 10,000 sockets, was a
    tenth of the idle server's CPU; psycopg dumping a list of strings cost 35 ms (W3).
    """
    digests = set(digests)
    literal = ",".join(digests)
    invalid: set[str] = set()
    if "" in digests or literal.encode().translate(None, HEX_DIGITS + b","):  # what is left is not hex
        invalid = {digest for digest in digests if not digest or digest.encode().translate(None, HEX_DIGITS)}
        digests -= invalid
        literal = ",".join(digests)
    if not digests:
        return invalid
    now = timezone.now()
    if connection.vendor != "postgresql":
        valid: set[str] = set()
        checked = list(digests)
        for start in range(0, len(checked), TOKEN_CHECK_CHUNK):
            rows = AuthToken.objects.filter(digest__in=checked[start : start + TOKEN_CHECK_CHUNK])
            rows = rows.filter(user__is_active=True).exclude(expiry__lte=now)  # NULL: never expires
            valid.update(rows.values_list("digest", flat=True))
        return invalid | (digests - valid)
    quote = connection.ops.quote_name
    tokens, users = AuthToken._meta, get_user_model()._meta
    token_table, user_table = quote(tokens.db_table), quote(users.db_table)
    user_id, token_user = quote(users.pk.column), quote(tokens.get_field("user").column)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT d FROM unnest(%s::text[]) AS d WHERE NOT EXISTS (SELECT 1 FROM {token_table} t"
            f" JOIN {user_table} u ON u.{user_id} = t.{token_user}"
            " WHERE t.digest = d AND u.is_active AND (t.expiry IS NULL OR t.expiry > %s))",
            ["{" + literal + "}", now],
        )
        return invalid | {digest for (digest,) in cursor.fetchall()}


# -- end users and staff -------------------------------------------------------------------


def may_hold_client_token(user) -> bool:
    """Client tokens are minted for end users only: a staff or superuser account never gets one."""
    return not (user.is_staff or user.is_superuser)


def is_session_request(request) -> bool:
    return isinstance(getattr(request, "successful_authenticator", None), SessionAuthentication)


def has_staff_powers(request) -> bool:
    """Staff powers come only with this site's session, never with an end-user token or API key."""
    user = request.user
    return bool(
        user and user.is_authenticated and user.is_active and user.is_staff and is_session_request(request)
    )
