from django.urls import path

from delivery.webhooks import views

urlpatterns = [
    path("webhooks/", views.WebhookListCreateView.as_view(), name="webhooks"),
    path("webhooks/<int:webhook_id>/", views.WebhookDetailView.as_view(), name="webhook-detail"),
    path("webhooks/<int:webhook_id>/attempts/", views.WebhookAttemptsView.as_view(), name="webhook-attempts"),
]
