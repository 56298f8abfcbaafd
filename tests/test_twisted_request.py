"""Twisted's Content-Type parse, remembered per value, answers as Twisted's own parse does."""

from twisted.web import http

from notifyproject import twisted_request

VALUES = [
    b"application/json",
    b"application/json; charset=utf-8",
    b"Application/JSON ; Charset=UTF-8",
    b"application/x-www-form-urlencoded",
    b"multipart/form-data; boundary=----abc",
    b"text/plain",
    b"",
    b";;;",
    b"not a type",
    b"\xff\xfe/\x00",
]


def test_remembered_parses_answer_as_twisteds_own_and_are_reused():
    assert twisted_request.install()  # the ASGI application installs it too; twice is harmless
    assert twisted_request.install()
    remembered = http._parseContentType
    own = remembered.__wrapped__
    for value in VALUES:
        assert remembered(value) == own(value), value
    hits = remembered.cache_info().hits
    for value in VALUES:
        remembered(value)
    assert remembered.cache_info().hits == hits + len(VALUES)
    assert remembered.cache_info().maxsize == twisted_request.CACHED_CONTENT_TYPES
