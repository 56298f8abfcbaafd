import pytest

from tests.webhooks.receiver import Receiver


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def second_receiver():
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def private_urls_allowed(settings):
    """Loopback receivers are private addresses: allowed here as WEBHOOK_ALLOW_PRIVATE_URLS=1 would."""
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
