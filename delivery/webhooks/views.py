"""Webhook registration for product backends (API key `send`, or staff). Thin: parse, call, format."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from delivery.webhooks import services
from delivery.webhooks.models import WebhookAttempt
from delivery.webhooks.serializers import (
    WebhookAttemptSerializer,
    WebhookCreatedSerializer,
    WebhookCreateSerializer,
    WebhookSerializer,
)
from notifyproject.api import CursorPagination
from notifyproject.identities.models import ApiKey
from notifyproject.identities.permissions import CanSend


def owner_of(request) -> services.Owner:
    if isinstance(request.auth, ApiKey):
        return services.Owner(api_key=request.auth)
    return services.Owner(user=request.user)


class WebhookListCreateView(generics.ListAPIView):
    permission_classes = [CanSend]
    serializer_class = WebhookSerializer

    def get_queryset(self):
        return owner_of(self.request).webhooks()

    @extend_schema(request=WebhookCreateSerializer, responses={201: WebhookCreatedSerializer})
    def post(self, request):
        serializer = WebhookCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        webhook = services.webhook_create(owner=owner_of(request), **serializer.validated_data)
        return Response(WebhookCreatedSerializer(webhook).data, status=status.HTTP_201_CREATED)


class WebhookDetailView(APIView):
    permission_classes = [CanSend]

    @extend_schema(responses={204: None})
    def delete(self, request, webhook_id: int):
        if not services.webhook_delete(owner=owner_of(request), webhook_id=webhook_id):
            raise exceptions.NotFound("No such webhook.")
        return Response(status=status.HTTP_204_NO_CONTENT)


class AttemptPagination(CursorPagination):
    ordering = "-id"


class WebhookAttemptsView(generics.ListAPIView):
    permission_classes = [CanSend]
    serializer_class = WebhookAttemptSerializer
    pagination_class = AttemptPagination

    def get_queryset(self):
        webhook = get_object_or_404(owner_of(self.request).webhooks(), pk=self.kwargs["webhook_id"])
        return WebhookAttempt.objects.filter(webhook=webhook).select_related("event")
