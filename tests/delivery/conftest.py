import pytest

from delivery import fanout


@pytest.fixture
def fan_out(django_capture_on_commit_callbacks):
    """Fan a notification out in-process, running what would run after each batch commits."""

    def run(notification_id: int) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            fanout.notification_fan_out(notification_id)

    return run
