"""Reads for devices and topics."""

from devices.models import DEFAULT_APP, App, Device, TopicSubscription


def devices_of_user(user):
    return Device.objects.filter(user=user).order_by("-id")


def topics_of_user(user) -> list[str]:
    return list(TopicSubscription.objects.filter(user=user).order_by("topic").values_list("topic", flat=True))


def apps_by_slug(slugs) -> dict[str, App]:
    """The stored apps among these slugs (the default app has no row); no query for the default alone."""
    wanted = set(slugs) - {DEFAULT_APP}
    if not wanted:
        return {}
    return {app.slug: app for app in App.objects.filter(slug__in=wanted)}


def app_exists(slug: str) -> bool:
    return slug == DEFAULT_APP or App.objects.filter(slug=slug).exists()
