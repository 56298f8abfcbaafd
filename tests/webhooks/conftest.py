import pytest

from tests.webhooks.receiver import Receiver


@pytest.fixture(autouse=True)
def _fresh_webhook_state():
    """Each test's receivers are new servers: no kept-alive connection outlives its test, and
    no webhook of a rolled-back test stays in the process's list of active ones."""
    from delivery.webhooks.client import reset_webhook_client
    from delivery.webhooks.events import forget_active_webhooks

    yield
    reset_webhook_client()
    forget_active_webhooks()


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


@pytest.fixture
def make_webhook(db):
    """A webhook registered by a new API key (or the given one) for the given events."""
    from delivery.webhooks.services import Owner, webhook_create
    from notifyproject.identities.api_keys import api_key_create

    def make(url: str, events=("delivery.sent",), api_key=None, **fields):
        if api_key is None:
            api_key, _ = api_key_create(name="hooks", scopes=["send"])
        webhook = webhook_create(owner=Owner(api_key=api_key), url=url, events=list(events))
        if fields:
            for name, value in fields.items():
                setattr(webhook, name, value)
            webhook.save()
        return webhook

    return make
