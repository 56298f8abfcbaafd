"""Reads for devices and topics."""

from devices.models import Device, TopicSubscription


def devices_of_user(user):
    return Device.objects.filter(user=user).order_by("-id")


def topics_of_user(user) -> list[str]:
    return list(TopicSubscription.objects.filter(user=user).order_by("topic").values_list("topic", flat=True))
