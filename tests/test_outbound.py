"""Outbound URL safety: clean_url() on many spellings, and the connect-time guard against real sockets."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import aiohttp.abc
import pytest

from notifyproject import outbound
from notifyproject.outbound import UnsafeURLError, address_is_allowed, clean_url
from tests.fakes.loopback import loopback_only  # noqa: F401 - autouse: nothing leaves loopback
from tests.support.listener import CountingListener, raw_response

SECRET = "sk_live_51HqLyjWDarjtT1zdp7dc"  # what an internal service's error page might hold


def refusal(url: str, *, allow_private: bool = False) -> str:
    with pytest.raises(UnsafeURLError) as caught:
        clean_url(url, allow_private=allow_private)
    assert str(caught.value)  # a sentence for the person who typed the URL
    return caught.value.code


class TestCleanUrl:
    @pytest.mark.parametrize(
        "url",
        [
            "https://１２７.０.０.１:8443/x",  # fullwidth digits: IDNA maps them to 127.0.0.1
            "https://127.1/x",
            "https://127.0.1/x",
            "https://0177.0.0.1/x",
            "https://0x7f.0.0.1/x",
            "https://0X7F.0.0.1/x",
            "https://0x7f000001/x",
            "https://2130706433/x",
            "https://017700000001/x",
            "https://127.0.0.1./x",  # a trailing dot is another spelling
            "https://127.0.0.1。/x",  # so is an ideographic full stop
            "https://8.8.8.010/x",  # public, but octal: still refused
        ],
    )
    def test_non_canonical_ipv4_is_refused_whatever_the_policy(self, url):
        assert refusal(url) == "NONCANONICAL_ADDRESS"
        assert refusal(url.replace("https:", "http:"), allow_private=True) == "NONCANONICAL_ADDRESS"

    @pytest.mark.parametrize(
        "url",
        [
            "https://127.0.0.1/x",
            "https://127.255.0.9:8443/x",
            "https://0.0.0.0/x",
            "https://10.1.2.3/x",
            "https://172.16.5.4/x",
            "https://192.168.0.10/x",
            "https://100.64.0.1/x",  # carrier-grade NAT
            "https://169.254.169.254/latest/meta-data",  # cloud metadata
            "https://224.0.0.1/x",
            "https://255.255.255.255/x",
            "https://[::1]/x",
            "https://[::]/x",
            "https://[fe80::1]/x",
            "https://[fc00::1]/x",
            "https://[::ffff:127.0.0.1]/x",  # IPv4-mapped: judged as IPv4
            "https://[::ffff:7f00:1]/x",
            "https://[::ffff:10.0.0.1]/x",
            "https://[64:ff9b::7f00:1]/x",  # NAT64 of 127.0.0.1
            "https://[2002:7f00:1::]/x",  # 6to4 of 127.0.0.1
            "https://[64:ff9b:1::1]/x",  # a network's own NAT64 prefix
            "https://localhost/x",
            "https://LOCALHOST:8443/x",
            "https://localhost./x",
            "https://push.localhost/x",  # RFC 6761: every name under localhost is loopback
            "https://ｌｏｃａｌｈｏｓｔ/x",  # fullwidth letters map to localhost
            "https://intranet/x",
            "https://printer.local/x",
            "https://db.internal/x",
            "https://router.home.arpa/x",
        ],
    )
    def test_private_addresses_and_names_are_refused(self, url):
        assert refusal(url) == "PRIVATE_ADDRESS"

    @pytest.mark.parametrize(
        "url, code",
        [
            ("http://push.example.net/x", "INSECURE_SCHEME"),
            ("ftp://push.example.net/x", "INSECURE_SCHEME"),
            ("javascript:alert(1)", "INSECURE_SCHEME"),
            ("https://user:pw@push.example.net/x", "CREDENTIALS_IN_URL"),
            ("https://@push.example.net/x", "CREDENTIALS_IN_URL"),
            ("https://push.example.net@127.0.0.1/x", "CREDENTIALS_IN_URL"),
            ("https://push.example.net\\@127.0.0.1/x", "INVALID_URL"),  # a backslash is / to WHATWG
            ("https://push.exa\tmple.net/x", "INVALID_URL"),
            ("https://push.example.net/a b", "INVALID_URL"),
            ("https://%31%32%37.0.0.1/x", "INVALID_URL"),
            ("https://[fe80::1%25eth0]/x", "INVALID_URL"),
            ("https://[not-ipv6]/x", "INVALID_URL"),
            ("https://1.2.3.4.5/x", "INVALID_URL"),  # ends in a number, is no address
            ("https://push.example.123/x", "INVALID_URL"),
            ("https://push..example.net/x", "INVALID_URL"),
            ("https://e\u200bvil.example/x", "INVALID_URL"),  # yarl refuses it; IDNA would drop it
            ("https://push.example.net:99999/x", "INVALID_URL"),
            ("https://push.example.net:0/x", "INVALID_URL"),
            ("https:///x", "INVALID_URL"),
            ("not a url", "INVALID_URL"),
        ],
    )
    def test_malformed_or_insecure_urls_are_refused(self, url, code):
        assert refusal(url) == code

    @pytest.mark.parametrize(
        "url, cleaned",
        [
            ("https://push.example.net/wpush/v2/gAAAA?x=1", "https://push.example.net/wpush/v2/gAAAA?x=1"),
            ("https://PUSH.Example.NET:8443/x", "https://push.example.net:8443/x"),
            ("https://bücher.example/x", "https://xn--bcher-kva.example/x"),
            ("https://ｐｕｓｈ．ｅｘａｍｐｌｅ．ｎｅｔ/x", "https://push.example.net/x"),
            ("https://8.8.8.8/x", "https://8.8.8.8/x"),
            ("https://[2001:4860:4860:0:0:0:0:8888]/x", "https://[2001:4860:4860::8888]/x"),
        ],
    )
    def test_public_urls_come_back_with_the_host_the_client_will_use(self, url, cleaned):
        assert clean_url(url, allow_private=False) == cleaned
        assert aiohttp.client.URL(cleaned).raw_host == aiohttp.client.URL(url).raw_host

    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1:8080/push",
            "http://localhost:8080/push",
            "https://[::1]/push",
            "http://10.0.0.2/x",
        ],
    )
    def test_allow_private_lets_loopback_private_and_http_through(self, url):
        assert clean_url(url, allow_private=True) == url
        assert refusal(url) in {"PRIVATE_ADDRESS", "INSECURE_SCHEME"}

    def test_allow_private_still_refuses_credentials(self):
        assert refusal("http://a:b@127.0.0.1/x", allow_private=True) == "CREDENTIALS_IN_URL"

    @pytest.mark.parametrize("allow_private", [False, True])
    @pytest.mark.parametrize(
        "url",
        [
            "https://fcm.googleapis.com/fcm/send/abc:APA91b-_x",
            "http://127.0.0.1:8080/push/xyz",
            "https://Push.Example:0443/a/b",
            "https://push.example:/x",
            "https://EXAMPLE.com./x",
            "https://１２７.０.０.１/x",
            "https://127.1/x",
            "https://[::ffff:127.0.0.1]/x",
            "https://a.local/x",
            "https://u@push.example/x",
            "https://push.example:0/x",
            "https://push.example:99999/x",
            "https://push.example//other.example/x",
            "https://push.example/a%2F..%2Fb",
            "https://push.example?x/y",
            "https://push.example#x/y",
            "https://push.example/x?",
        ],
    )
    def test_an_origin_judged_once_gives_what_judging_the_whole_url_gives(self, url, allow_private):
        def judged(clean):
            try:
                return clean(url, allow_private=allow_private)
            except UnsafeURLError as exc:
                return exc.code, str(exc)

        for _ in range(2):  # the origin's judgement is remembered after the first
            assert judged(clean_url) == judged(outbound._clean_whole_url)


@pytest.mark.parametrize(
    "ip, allowed",
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("10.0.0.1", False),
        ("169.254.169.254", False),
        ("fe80::1%2", False),
        ("fd12::1", False),
        ("0.0.0.0", False),
        ("239.1.1.1", False),
        ("not an address", False),
        ("127.1", False),
    ],
)
def test_address_is_allowed(ip, allowed):
    assert address_is_allowed(ip, allow_private=False) is allowed
    assert address_is_allowed(ip, allow_private=True) is (ip not in {"not an address", "127.1"})


class ScriptedResolver(aiohttp.abc.AbstractResolver):
    """DNS that answers every name with these addresses (the peer we fake, like a rebinding attacker)."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in self.addresses
        ]

    async def close(self) -> None:
        pass


def post_through_guard(url: str, *, allow_private: bool, **connector_options) -> int | BaseException:
    """POST once through a guarded connector: the status, or the exception aiohttp raised."""

    async def run():
        connector = outbound.guarded_connector(allow_private=allow_private, **connector_options)
        async with aiohttp.ClientSession(connector=connector) as session:
            try:
                async with outbound.post(session, url, data=b"payload") as response:
                    await response.read()
                    return response.status
            except aiohttp.ClientError as exc:
                return exc

    return asyncio.run(run())


class TestGuardedConnector:
    @pytest.mark.parametrize("host", ["127.0.0.1", "１２７.０.０.１", "[::ffff:127.0.0.1]", "localhost"])
    def test_no_connection_to_a_refused_address_literal_or_resolved(self, host):
        with CountingListener() as listener:
            outcome = post_through_guard(listener.url(host=host), allow_private=False)
            assert listener.accepted == 0
        assert isinstance(outcome, aiohttp.ClientConnectorError), outcome
        assert outbound.refused_reason(outcome).endswith("is a loopback address")

    @pytest.mark.parametrize("happy_eyeballs_delay", [0.25, None])
    def test_every_address_of_a_name_is_checked(self, happy_eyeballs_delay):
        """A name with several addresses: happy eyeballs tries each, and each is refused."""
        with CountingListener() as listener:
            resolver = ScriptedResolver(["::1", "127.0.0.1", "127.0.0.2", "::ffff:127.0.0.1"])
            outcome = post_through_guard(
                listener.url(host="push.example.com"),
                allow_private=False,
                resolver=resolver,
                happy_eyeballs_delay=happy_eyeballs_delay,
            )
            assert listener.accepted == 0
        assert isinstance(outcome, aiohttp.ClientConnectorError), outcome
        assert outbound.refused_reason(outcome).endswith("is a loopback address")

    def test_allow_private_connects(self):
        with CountingListener() as listener:
            resolver = ScriptedResolver(["127.0.0.1"])
            url = listener.url(host="push.example.com")
            assert post_through_guard(url, allow_private=True, resolver=resolver) == 201
            assert listener.accepted == 1

    def test_a_connection_error_is_not_a_refusal(self):
        with CountingListener() as listener:
            url = listener.url()
        outcome = post_through_guard(url, allow_private=True)  # nobody listens there any more
        assert isinstance(outcome, aiohttp.ClientConnectorError)
        assert outbound.refused_reason(outcome) is None
        assert (
            outbound.transport_error(outcome)
            == f"ClientConnectorError to 127.0.0.1:{listener.port} (ECONNREFUSED)"
        )

    def test_the_guard_cannot_be_replaced(self):
        with pytest.raises(TypeError):
            outbound.guarded_connector(allow_private=False, socket_factory=socket.socket)


def connect_through_guard(host: str, port: int, *, allow_private: bool) -> BaseException | None:
    """Open and close one connection with create_guarded_connection(): None, or what it raised."""

    async def run():
        try:
            transport, _ = await outbound.create_guarded_connection(
                asyncio.Protocol, host, port, allow_private=allow_private
            )
        except OSError as exc:
            return exc
        transport.close()
        return None

    return asyncio.run(run())


class TestGuardedConnection:
    """The same rule for clients that are not aiohttp (our HTTP/2 client)."""

    @pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "push.example.com"])
    def test_no_connection_to_a_refused_address_literal_or_resolved(self, host, monkeypatch):
        real_getaddrinfo = socket.getaddrinfo  # push.example.com: a name its owner points at loopback
        monkeypatch.setattr(
            socket,
            "getaddrinfo",
            lambda name, *a, **k: real_getaddrinfo(
                "127.0.0.1" if name == "push.example.com" else name, *a, **k
            ),
        )
        with CountingListener() as listener:
            outcome = connect_through_guard(host, listener.port, allow_private=False)
            assert listener.accepted == 0
        assert isinstance(outcome, outbound.RefusedAddressError), outcome
        assert outbound.refused_reason(outcome).endswith("is a loopback address")

    def test_allow_private_connects(self):
        with CountingListener() as listener:
            assert connect_through_guard("localhost", listener.port, allow_private=True) is None

    def test_a_connection_error_is_not_a_refusal(self):
        with CountingListener() as listener:
            port = listener.port
        outcome = connect_through_guard("127.0.0.1", port, allow_private=True)  # nobody listens there
        assert isinstance(outcome, ConnectionRefusedError)
        assert outbound.refused_reason(outcome) is None


class TestRedirects:
    def test_a_redirect_is_an_answer_not_a_new_destination(self):
        with CountingListener() as target:
            redirect = raw_response("307 Temporary Redirect", headers={"Location": target.url("/steal")})
            with CountingListener(redirect) as allowed:
                assert post_through_guard(allowed.url(), allow_private=True) == 307
                assert allowed.accepted == 1
            assert target.accepted == 0

    def test_following_redirects_cannot_be_asked_for(self):
        with pytest.raises(TypeError):
            outbound.post(None, "https://push.example.net/", allow_redirects=True)


class TestRecordedErrors:
    @pytest.mark.parametrize(
        "body",
        [
            f"internal error: token {SECRET}".encode(),
            f'{{"message": "bad key {SECRET}", "error": "Bad Request"}}'.encode(),
            f'{{"reason": "has spaces {SECRET}"}}'.encode(),
            f'{{"reason": "{SECRET}{SECRET}"}}'.encode(),  # longer than a token
            f"<html><title>{SECRET}</title></html>".encode(),
        ],
    )
    def test_the_body_never_reaches_the_error(self, body):
        error = outbound.response_error(400, body)
        assert error == "400 Bad Request"
        assert SECRET not in error

    @pytest.mark.parametrize(
        "body, error",
        [
            (b'{"reason": "BadJwtToken", "message": "free text"}', "400 Bad Request (BadJwtToken)"),
            (b'{"code": 404, "errno": 102, "error": "Not Found"}', "404 Not Found (102)"),
            (b'{"error": "Gone"}', "410 Gone"),  # the phrase again adds nothing
            (b"", "410 Gone"),
        ],
    )
    def test_a_reason_token_is_kept(self, body, error):
        assert outbound.response_error(int(error[:3]), body) == error

    def test_at_most_a_few_kib_of_an_answer_are_read(self):
        huge = b'{"reason": "Big", "padding": "' + b"x" * (1 << 20) + b'"}'

        async def run(url: str) -> tuple[int, bytes]:
            connector = outbound.guarded_connector(allow_private=True)
            async with (
                aiohttp.ClientSession(connector=connector) as session,
                outbound.post(session, url, data=b"payload") as response,
            ):
                return response.status, await outbound.read_answer(response)

        with CountingListener(raw_response("400 Bad Request", huge)) as listener:
            status, body = asyncio.run(run(listener.url()))
        assert len(body) == outbound.ERROR_BODY_SCAN_BYTES + 1 and huge.startswith(body)
        assert outbound.response_error(status, body) == "400 Bad Request"  # too long to look into

    def test_an_unknown_status_has_a_neutral_phrase(self):
        assert outbound.response_error(599) == "599 Error"

    def test_a_banner_from_another_protocol_is_not_quoted(self):
        banner = f"SSH-2.0-OpenSSH_9.6 {SECRET}\r\n".encode()
        with CountingListener(banner) as listener:
            outcome = post_through_guard(listener.url(), allow_private=True)
        assert isinstance(outcome, aiohttp.ClientResponseError)
        assert SECRET in outcome.message  # aiohttp quotes the status line it could not parse...
        assert outbound.transport_error(outcome) == "ClientResponseError"  # ...we do not
