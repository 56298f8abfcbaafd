"""Sending API (API keys / staff) and the end user's inbox. Thin: parse, call, format."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from delivery import selectors, services
from delivery.models import Delivery, Notification
from delivery.serializers import (
    DeliverySerializer,
    InboxPageSerializer,
    InboxQuerySerializer,
    NotificationAcceptedSerializer,
    NotificationCreateSerializer,
    NotificationDetailSerializer,
    accepted_body,
    notification_request_parse,
)
from notifyproject.api import Conflict, CursorPagination, PayloadTooLarge
from notifyproject.identities.models import ApiKey
from notifyproject.identities.permissions import CanRead, CanSend, IsEndUser
from notifyproject.throttling import SendRateThrottle

IDEMPOTENCY_KEY_MAX_CHARS = 255


def notification_of(request, notification_id: int) -> Notification:
    """The notification, if the caller may see it: a key bound to an app sees only its own sends."""
    return get_object_or_404(selectors.notifications_visible_to(request.auth), pk=notification_id)


def sender_of(request) -> services.Sender:
    if isinstance(request.auth, ApiKey):
        return services.Sender.for_api_key(request.auth)
    return services.Sender.for_user(request.user)


class NotificationCreateView(APIView):
    permission_classes = [CanSend]
    throttle_classes = [SendRateThrottle]

    @extend_schema(
        request=NotificationCreateSerializer,
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False)],
        responses={
            202: NotificationAcceptedSerializer,
            200: OpenApiResponse(NotificationAcceptedSerializer, description="Idempotent replay."),
        },
    )
    def post(self, request):
        idempotency_key = request.headers.get("Idempotency-Key", "").strip() or None
        if idempotency_key and len(idempotency_key) > IDEMPOTENCY_KEY_MAX_CHARS:
            raise exceptions.ValidationError(
                {"Idempotency-Key": [f"At most {IDEMPOTENCY_KEY_MAX_CHARS} characters."]}
            )
        if idempotency_key and "\x00" in idempotency_key:  # HTTP servers refuse it; not all do
            raise exceptions.ValidationError({"Idempotency-Key": ["NUL characters are not allowed."]})
        send = notification_request_parse(request.data)
        try:
            notification, created = services.notification_send(
                sender=sender_of(request), request=send, idempotency_key=idempotency_key
            )
        except services.PayloadTooLargeError as exc:
            raise PayloadTooLarge(str(exc)) from None
        except services.AppNotAllowedError as exc:
            raise exceptions.PermissionDenied(str(exc)) from None
        return Response(
            accepted_body(notification), status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK
        )


class NotificationDetailView(APIView):
    permission_classes = [CanRead]

    @extend_schema(responses={200: NotificationDetailSerializer})
    def get(self, request, notification_id: int):
        notification = notification_of(request, notification_id)
        notification.counts = selectors.delivery_counts(notification)
        return Response(NotificationDetailSerializer(notification).data)


class DeliveryPagination(CursorPagination):
    ordering = "id"


class NotificationDeliveriesView(generics.ListAPIView):
    permission_classes = [CanRead]
    serializer_class = DeliverySerializer
    pagination_class = DeliveryPagination

    def get_queryset(self):
        notification = notification_of(self.request, self.kwargs["notification_id"])
        return Delivery.objects.filter(notification=notification).select_related("user")


class NotificationCancelView(APIView):
    permission_classes = [CanSend]

    @extend_schema(request=None, responses={200: NotificationDetailSerializer})
    def post(self, request, notification_id: int):
        notification_of(request, notification_id)
        try:
            notification = services.notification_cancel(notification_id)
        except services.NotCancellableError as exc:
            raise Conflict(f"Too late to cancel: the {exc}.") from None
        notification.counts = selectors.delivery_counts(notification)
        return Response(NotificationDetailSerializer(notification).data)


class InboxView(APIView):
    permission_classes = [IsEndUser]

    @extend_schema(parameters=[InboxQuerySerializer], responses={200: InboxPageSerializer})
    def get(self, request):
        query = InboxQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        after = query.validated_data["after"]
        messages = selectors.inbox_page(request.user, after, query.validated_data["limit"])
        return Response(
            {
                "results": [selectors.message_payload(m.notification, m.seq, m.read_at) for m in messages],
                "cursor": messages[-1].seq if messages else after,
            }
        )


class InboxAckView(APIView):
    permission_classes = [IsEndUser]

    @extend_schema(request=None, responses={204: None})
    def post(self, request, notification_id: int):
        if not services.inbox_ack(user=request.user, notification_id=notification_id):
            raise exceptions.NotFound("No such message in your inbox.")
        return Response(status=status.HTTP_204_NO_CONTENT)
