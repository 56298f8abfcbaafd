from tests.fakes.loopback import loopback_only  # noqa: F401 - autouse: nothing leaves loopback
