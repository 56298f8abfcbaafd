from django.urls import path

from realtime.consumers import NotificationConsumer

websocket_urlpatterns = [
    path("ws/v1/notifications/", NotificationConsumer.as_asgi()),
]
