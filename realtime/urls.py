from django.urls import path

from realtime import views

urlpatterns = [
    path("api/v1/poll/", views.poll, name="poll"),
    path("api/v1/events/", views.events, name="events"),
    path("api/v1/webpush/key/", views.webpush_key, name="webpush-key"),
    path("api/v1/me/test-notification/", views.SelfTestNotificationView.as_view(), name="test-notification"),
    path("sw.js", views.service_worker, name="service-worker"),
    path("", views.demo, name="demo"),
]
