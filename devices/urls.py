from django.urls import path

from devices import views

urlpatterns = [
    path("auth/token/", views.PasswordTokenView.as_view(), name="auth-token"),
    path("client-tokens/", views.ClientTokenView.as_view(), name="client-tokens"),
    path("devices/", views.DeviceListCreateView.as_view(), name="devices"),
    path("devices/<int:device_id>/", views.DeviceDetailView.as_view(), name="device-detail"),
    path("me/preferences/", views.PreferencesView.as_view(), name="preferences"),
    path("topics/", views.TopicListView.as_view(), name="topics"),
    path("topics/<str:name>/subscription/", views.TopicSubscriptionView.as_view(), name="topic-subscription"),
]
