from django.urls import path

from delivery import views

urlpatterns = [
    path("notifications/", views.NotificationCreateView.as_view(), name="notifications"),
    path(
        "notifications/<int:notification_id>/",
        views.NotificationDetailView.as_view(),
        name="notification-detail",
    ),
    path(
        "notifications/<int:notification_id>/deliveries/",
        views.NotificationDeliveriesView.as_view(),
        name="notification-deliveries",
    ),
    path(
        "notifications/<int:notification_id>/cancel/",
        views.NotificationCancelView.as_view(),
        name="notification-cancel",
    ),
    path("inbox/", views.InboxView.as_view(), name="inbox"),
    path("inbox/<int:notification_id>/ack/", views.InboxAckView.as_view(), name="inbox-ack"),
]
