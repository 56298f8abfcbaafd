"""Placeholders until the real FCM, APNs and Web Push modules land: every send is skipped."""


class _NotYetImplemented:
    platform = ""
    setting = ""

    def not_configured_reason(self) -> str:
        return f"{self.platform} provider is not available in this build"

    def send(self, message, targets):
        raise AssertionError("an unconfigured provider is never asked to send")


class FcmProvider(_NotYetImplemented):
    platform = "fcm"


class ApnsProvider(_NotYetImplemented):
    platform = "apns"


class WebPushProvider(_NotYetImplemented):
    platform = "webpush"
