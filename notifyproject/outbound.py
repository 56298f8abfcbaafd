"""Outbound URL safety (SSRF): the one place that decides where Clarion may send HTTP requests.

Every URL a user or integrator supplies (Web Push endpoints, webhook URLs) goes through two checks:

1. `clean_url()` when it is registered: https only, no credentials, and the host judged exactly as
   aiohttp/yarl will connect to it (IDNA/UTS-46 mapping, so `１２７.０.０.１` is 127.0.0.1), in
   one canonical spelling. IPv4 in any other spelling (`127.1`, `0177.0.0.1`, `0x7f.0.0.1`,
   `2130706433`) is refused outright, whatever the policy: the WHATWG URL standard and
   getaddrinfo() read those as addresses, so they only serve to disguise one.
2. `guarded_connector()` when it is sent to: aiohttp's `socket_factory` hook sees the address of
   every connection attempt (IP literal or resolved name, every address happy eyeballs tries)
   before connect(), and refuses non-public ones. A name that resolves somewhere private, or
   rebinds after registration, is caught there. Clients that are not aiohttp (the HTTP/2 client
   of delivery/providers/http2.py) connect through `create_guarded_connection()`, which resolves
   and refuses with the same check before connect().

Redirects are never followed: callers send with `post()` (or pass `allow_redirects=False`), so a
3xx answer is recorded as the status it is. At most a few KiB of an answer are read
(`read_answer()`), and what is recorded about it is `response_error()`: status, phrase and at
most a short reason token, never the remote's free text (which would turn a delivery log into a
port scanner or a data leak). Tests: tests/test_outbound.py and
tests/delivery/providers/test_webpush_ssrf.py; docs/security.md.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import http
import ipaddress
import re
import socket
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import idna
import orjson
from yarl import URL

# RFC 6761 §6.3: every name under `localhost` is loopback. The others are names that only mean
# something inside a private network (mDNS, RFC 8375, and common private TLDs).
PRIVATE_NAME_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa", ".localdomain")
MAX_HOST_CHARS = 253  # RFC 1035 §2.3.4
MAX_LABEL_CHARS = 63
ASCII_HOST_PATTERN = re.compile(r"^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?$")
# Characters no URL we accept contains: WHATWG parsers strip tab/newline and treat `\` as `/`,
# Python's urlsplit does neither, so a URL with them could mean two hosts to two parsers.
UNSAFE_URL_CHARACTERS = re.compile(r"[\x00-\x20\x7f\\]")
# A path of only these (RFC 3986 pchar and "/", without "@") is kept as written by urlsplit,
# urlunsplit and yarl, and ends no parser's authority early; nor does an authority without these:
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:%/-]*")
_AUTHORITY_ENDS = re.compile(r"[?#]")
_AUTHORITY_END = re.compile(r"[/?#]")
# A provider's reason token in an error answer (autopush `errno`, FCM `reason`): an identifier.
REASON_TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
REASON_TOKEN_KEYS = ("reason", "errno", "error_code", "error")
ERROR_BODY_SCAN_BYTES = 4096  # a reason token sits in a small JSON body; larger bodies are not read
# IPv6 ranges that carry an IPv4 address which the network may end up connecting to.
NAT64_WELL_KNOWN_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052
# RFC 8215: a NAT64 prefix for one network's own use; Python 3.11's ipaddress calls it global.
NAT64_LOCAL_USE_PREFIX = ipaddress.IPv6Network("64:ff9b:1::/48")
JUDGED_HOSTS_KEPT = 4096  # hosts whose spelling was judged (push services and webhook receivers)


class UnsafeURLError(ValueError):
    """A URL Clarion refuses to send to; `.code` says why, str() says it in a sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class RefusedAddressError(OSError):
    """A connection attempt to an address the outbound policy refuses, stopped before connect().

    The message is the same for every address, so that when happy eyeballs gathers one refusal per
    address aiohappyeyeballs re-raises this instance instead of a combined plain OSError.
    """

    def __init__(self, address: str, kind: str) -> None:
        super().__init__(errno.EACCES, "refused to connect to a non-public address")
        self.address = address
        self.kind = kind

    @property
    def reason(self) -> str:
        return f"{self.address} is a {self.kind} address"


def clean_url(url: str, *, allow_private: bool) -> str:
    """The URL with its host in canonical form, or UnsafeURLError saying why it may not be used.

    Without network I/O: a name is judged by what it says (localhost, .local, single labels);
    what it resolves to is judged at connect time by `guarded_connector()`. A URL that is an
    origin and a plain path (every Web Push endpoint) has its origin judged once and the path
    kept as written, which is what judging the whole URL gives (tests/test_outbound.py).
    """
    if isinstance(url, str) and url.startswith(("https://", "http://")):
        slash = url.find("/", url.index("//") + 2)
        if slash > 0 and _PLAIN_PATH.fullmatch(url, slash) and not _AUTHORITY_ENDS.search(url, 0, slash):
            return _clean_origin(url[:slash], allow_private) + url[slash:]
    return _clean_whole_url(url, allow_private=allow_private)


@functools.lru_cache(maxsize=JUDGED_HOSTS_KEPT)
def _clean_origin(origin: str, allow_private: bool) -> str:
    return _clean_whole_url(origin + "/", allow_private=allow_private)[:-1]


def _clean_whole_url(url: str, *, allow_private: bool) -> str:
    if not isinstance(url, str) or UNSAFE_URL_CHARACTERS.search(url):
        raise UnsafeURLError("INVALID_URL", "The URL contains spaces, control characters or backslashes.")
    try:
        parts = urlsplit(url)
        raw_host = parts.hostname or ""
        port = parts.port
    except ValueError:
        raise UnsafeURLError("INVALID_URL", "The URL is not valid.") from None
    allowed_schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in allowed_schemes:
        raise UnsafeURLError("INSECURE_SCHEME", "The URL must start with https://.")
    if "@" in parts.netloc:
        raise UnsafeURLError("CREDENTIALS_IN_URL", "The URL may not carry a user name or password.")
    if not raw_host:
        raise UnsafeURLError("INVALID_URL", "The URL must name a host.")
    if port == 0:
        raise UnsafeURLError("INVALID_URL", "The URL's port must be between 1 and 65535.")
    host, netloc_host = _judged_host(raw_host, "[" in parts.netloc, allow_private)
    netloc = netloc_host if port is None else f"{netloc_host}:{port}"
    cleaned = urlunsplit(parts._replace(netloc=netloc))
    _agree_with_the_client(url, host)
    if cleaned != url:
        _agree_with_the_client(cleaned, host)
    return cleaned


@functools.lru_cache(maxsize=JUDGED_HOSTS_KEPT)
def _judged_host(raw_host: str, bracketed: bool, allow_private: bool) -> tuple[str, str]:
    """(host, host as the netloc spells it) in canonical form, or UnsafeURLError; no network I/O.

    Cached: it depends on nothing else, and a batch of Web Push endpoints shares a few hosts.
    """
    if bracketed:
        host = _canonical_ipv6(raw_host)
        _judge_address(ipaddress.IPv6Address(host), allow_private)
        return host, f"[{host}]"
    host = _mapped_host(raw_host)
    address = _ipv4_of(host)
    if address is not None:
        if host != str(address):
            raise UnsafeURLError(
                "NONCANONICAL_ADDRESS",
                f"Write the IPv4 address as four decimal numbers ({address}), not {raw_host!r}.",
            )
        if raw_host != host:  # e.g. fullwidth digits that IDNA maps to ASCII ones
            raise UnsafeURLError(
                "NONCANONICAL_ADDRESS", f"Write the IPv4 address in ASCII digits ({address})."
            )
        _judge_address(address, allow_private)
    elif not allow_private and _name_is_private(host):
        raise UnsafeURLError(
            "PRIVATE_ADDRESS", f"{host!r} names a loopback or private-network host, not a public one."
        )
    return host, host


def address_is_allowed(ip: str, *, allow_private: bool) -> bool:
    """Whether a connection to this IP address (as a resolver or socket spells it) is allowed."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return allow_private or _refusal_kind(address) is None


def guarded_connector(*, allow_private: bool, **kwargs) -> aiohttp.TCPConnector:
    """An aiohttp connector that checks every address it connects to, before connect().

    aiohttp hands IP literals straight to the socket and resolves names itself; both paths, and
    each address happy eyeballs tries, go through `socket_factory`, which is where we refuse.
    A refusal surfaces as `aiohttp.ClientConnectorError`; `refused_reason()` recognises it.
    """
    if "socket_factory" in kwargs:
        raise TypeError("guarded_connector() installs its own socket_factory")
    factory = functools.partial(_guarded_socket, allow_private=allow_private)
    return aiohttp.TCPConnector(socket_factory=factory, **kwargs)


async def create_guarded_connection(protocol_factory, host: str, port: int, *, allow_private: bool, **kwargs):
    """`loop.create_connection()` that connects only to addresses the policy allows.

    Resolves `host` itself and checks each address with the same rule as `guarded_connector()`
    before connect(), trying them in order; raises RefusedAddressError when every address was
    refused, else the last connect error. `kwargs` go to create_connection (ssl, server_hostname).
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    errors: list[OSError] = []
    for info in infos:
        try:
            sock = _guarded_socket(info, allow_private=allow_private)
        except RefusedAddressError as exc:
            errors.append(exc)
            continue
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, info[4])
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        return await loop.create_connection(protocol_factory, sock=sock, **kwargs)
    if not errors:
        raise OSError(errno.EADDRNOTAVAIL, f"{host} resolves to no address")
    connect_errors = [exc for exc in errors if not isinstance(exc, RefusedAddressError)]
    raise connect_errors[-1] if connect_errors else errors[0]


def refused_reason(exc: BaseException) -> str | None:
    """`'127.0.0.1 is a loopback address'` if `exc` comes from a refused connection, else None."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, RefusedAddressError):
            return current.reason
        pending += [getattr(current, "os_error", None), current.__cause__, current.__context__]
    return None


def post(session: aiohttp.ClientSession, url: str, **kwargs):
    """`session.post()` that never follows a redirect: a 3xx is an answer, not a new destination.

    Following one would send the body to a host nobody checked (a 307/308 keeps the POST body).
    """
    if kwargs.get("allow_redirects"):
        raise TypeError("outbound requests never follow redirects")
    kwargs["allow_redirects"] = False
    return session.post(url, **kwargs)


async def read_answer(response: aiohttp.ClientResponse) -> bytes:
    """The start of an answer's body, at most ERROR_BODY_SCAN_BYTES + 1 bytes: enough for
    `response_error()` to find a reason token, without holding whatever a remote chooses to send.
    """
    chunks: list[bytes] = []
    size = 0
    while size <= ERROR_BODY_SCAN_BYTES:
        chunk = await response.content.read(ERROR_BODY_SCAN_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def response_error(status: int, body: bytes = b"") -> str:
    """What to record about an unsuccessful answer: `400 Bad Request` or `400 Bad Request (TOKEN)`.

    Only the status, its standard phrase and a provider's reason token (an identifier found under
    one of REASON_TOKEN_KEYS in a JSON body) are kept; free text from the remote never is.
    """
    phrase = status_phrase(status)
    token = _reason_token(body, phrase)
    return f"{status} {phrase} ({token})" if token else f"{status} {phrase}"


def transport_error(exc: BaseException) -> str:
    """A failed request in our own words: the exception's class and, for a failed connect, where
    and the errno name. Never the exception's text, which can quote the remote (a parser error
    quotes the status line, e.g. another protocol's banner).
    """
    name = type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_errno = exc.os_error.errno
        cause = errno.errorcode.get(os_errno, str(os_errno)) if isinstance(os_errno, int) else "no errno"
        return f"{name} to {exc.host}:{exc.port} ({cause})"
    return name


def url_origin(url: str) -> str:
    """`scheme://host[:port]` of a URL `clean_url()` returned (its authority ends at `/`, `?` or `#`)."""
    end = _AUTHORITY_END.search(url, url.find("//") + 2)
    return url if end is None else url[: end.start()]


def status_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# -- internals -------------------------------------------------------------------------------------
def _guarded_socket(addr_info, *, allow_private: bool) -> socket.socket:
    family, type_, proto, _, sockaddr = addr_info
    host = sockaddr[0]
    if not allow_private:
        try:
            kind = _refusal_kind(ipaddress.ip_address(host))
        except ValueError:
            kind = "unparseable"
        if kind is not None:
            raise RefusedAddressError(host, kind)
    return socket.socket(family=family, type=type_, proto=proto)


def _refusal_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """None for a public unicast address, else what it is (`loopback`, `private`, ...)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return _refusal_kind(embedded)
        if address.scope_id:
            return "link-local"
        if address in NAT64_LOCAL_USE_PREFIX:
            return "private"
    if address.is_loopback:
        return "loopback"
    if address.is_unspecified:
        return "unspecified"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if address.is_reserved or not address.is_global:
        return "reserved"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 or 6to4 IPv6 address leads to, if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64_WELL_KNOWN_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def _judge_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool) -> None:
    kind = None if allow_private else _refusal_kind(address)
    if kind is not None:
        raise UnsafeURLError(
            "PRIVATE_ADDRESS", f"{address} is a {kind} address; only public addresses are allowed."
        )


def _canonical_ipv6(raw_host: str) -> str:
    """The compressed form of a bracketed host, which must be an IPv6 address without a zone."""
    if "%" in raw_host:
        raise UnsafeURLError("INVALID_URL", "An IPv6 address in a URL may not name a zone (%).")
    try:
        return ipaddress.IPv6Address(raw_host).compressed
    except ValueError:
        raise UnsafeURLError("INVALID_URL", f"[{raw_host}] is not an IPv6 address.") from None


def _mapped_host(raw_host: str) -> str:
    """The host as yarl sends it: lowercased if ASCII, else IDNA/UTS-46 mapped to A-labels."""
    if "%" in raw_host:
        raise UnsafeURLError("INVALID_URL", "The host may not be percent-encoded.")
    if raw_host.isascii():
        host = raw_host.lower()
    else:
        try:
            host = idna.encode(raw_host, uts46=True).decode("ascii")
        except idna.IDNAError:
            raise UnsafeURLError("INVALID_URL", f"{raw_host!r} is not a valid host name.") from None
    labels = host.removesuffix(".").split(".")
    if (
        not ASCII_HOST_PATTERN.match(host)
        or len(host) > MAX_HOST_CHARS
        or any(len(label) > MAX_LABEL_CHARS for label in labels)
    ):
        raise UnsafeURLError("INVALID_URL", f"{raw_host!r} is not a valid host name.")
    return host


def _ipv4_of(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a host is, by the WHATWG URL standard's rules, or None for a domain name.

    A host whose last label is a number (decimal, 0x-hex or 0-octal) is an IPv4 address in some
    spelling; if it does not parse as one the URL is invalid (WHATWG "ends in a number").
    """
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    if _ipv4_number(parts[-1]) is None:
        return None
    numbers = [_ipv4_number(part) for part in parts]
    if len(parts) > 4 or None in numbers or any(n > 255 for n in numbers[:-1]):
        raise UnsafeURLError("INVALID_URL", f"{host!r} ends in a number but is not an IPv4 address.")
    if numbers[-1] >= 256 ** (5 - len(numbers)):
        raise UnsafeURLError("INVALID_URL", f"{host!r} is out of the IPv4 range.")
    value = numbers[-1]
    for index, number in enumerate(numbers[:-1]):
        value += number * 256 ** (3 - index)
    return ipaddress.IPv4Address(value)


def _ipv4_number(part: str) -> int | None:
    """WHATWG "IPv4 number parser": decimal, 0x-prefixed hex or 0-prefixed octal; None if not one."""
    if part == "":
        return None
    radix = 10
    if part[:2] in ("0x", "0X"):
        part, radix = part[2:], 16
    elif len(part) > 1 and part.startswith("0"):
        part, radix = part[1:], 8
    if part == "":
        return 0
    digits = {10: "0123456789", 16: "0123456789abcdefABCDEF", 8: "01234567"}[radix]
    if any(character not in digits for character in part):
        return None
    return int(part, radix)


def _name_is_private(host: str) -> bool:
    name = host.removesuffix(".")
    return name == "localhost" or "." not in name or name.endswith(PRIVATE_NAME_SUFFIXES)


def _agree_with_the_client(cleaned: str, host: str) -> None:
    """Refuse a URL that yarl (the client's parser) would read with another host than we judged."""
    try:
        client_host = URL(cleaned).raw_host
    except ValueError:
        client_host = None
    if client_host != host:
        raise UnsafeURLError("INVALID_URL", "The URL's host is ambiguous.")


def _reason_token(body: bytes, phrase: str) -> str:
    if not body or len(body) > ERROR_BODY_SCAN_BYTES:
        return ""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(document, dict):
        return ""
    for key in REASON_TOKEN_KEYS:
        value = document.get(key)
        if isinstance(value, bool) or not isinstance(value, str | int):
            continue
        token = str(value)
        if REASON_TOKEN_PATTERN.match(token) and token.lower() != phrase.lower():
            return token
    return ""
