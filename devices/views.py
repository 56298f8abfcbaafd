"""End-user API: tokens, devices and topic subscriptions. Thin: parse, call, format."""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import authenticate
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, generics, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from devices import preferences, selectors, services
from devices.serializers import (
    ClientTokenRequestSerializer,
    DeviceRegistrationSerializer,
    DeviceSerializer,
    PasswordLoginSerializer,
    PreferencesSerializer,
    TokenSerializer,
    TopicListSerializer,
    TopicNameSerializer,
)
from notifyproject import throttling
from notifyproject.identities import client_tokens
from notifyproject.identities.permissions import CanSend, IsEndUser
from notifyproject.throttling import ClientTokenRateThrottle, LoginRateThrottle, RegistrationRateThrottle


class PasswordTokenView(APIView):
    """Exchange a username and password for an end-user token."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [LoginRateThrottle]

    @extend_schema(request=PasswordLoginSerializer, responses={200: TokenSerializer})
    def post(self, request):
        serializer = PasswordLoginSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        username = serializer.validated_data["username"]
        blocked = throttling.signin_blocked_message(request, username)
        if blocked:
            refused = exceptions.Throttled(detail=blocked)
            refused.wait = settings.CLARION_SIGNIN_FAILURE_WINDOW_SECS  # becomes Retry-After
            raise refused
        user = authenticate(request, **serializer.validated_data)
        if user is None:
            throttling.signin_failed(request, username)
            raise exceptions.AuthenticationFailed("Wrong username or password.")
        token, expires_at = client_tokens.end_user_token_create(
            user=user, ttl=settings.REST_KNOX["TOKEN_TTL"]
        )
        return Response({"token": token, "expires_at": expires_at})

    def get_authenticate_header(self, request):
        return "Token"


class ClientTokenView(APIView):
    """A product backend mints a token for one of its users (created if unknown)."""

    permission_classes = [CanSend]
    throttle_classes = [ClientTokenRateThrottle]

    @extend_schema(request=ClientTokenRequestSerializer, responses={201: TokenSerializer})
    def post(self, request):
        serializer = ClientTokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            token, expires_at = client_tokens.client_token_create(
                username=serializer.validated_data["user"],
                ttl=timedelta(seconds=serializer.validated_data["ttl"]),
            )
        except client_tokens.ClientTokenRefusedError as exc:
            raise exceptions.PermissionDenied(str(exc)) from None
        return Response({"token": token, "expires_at": expires_at}, status=status.HTTP_201_CREATED)


class DeviceListCreateView(generics.ListAPIView):
    permission_classes = [IsEndUser]
    throttle_classes = [RegistrationRateThrottle]
    serializer_class = DeviceSerializer

    def get_queryset(self):
        return selectors.devices_of_user(self.request.user)

    @extend_schema(
        request=DeviceRegistrationSerializer,
        responses={
            201: DeviceSerializer,
            200: OpenApiResponse(DeviceSerializer, description="Already registered."),
        },
    )
    def post(self, request):
        serializer = DeviceRegistrationSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        device, created = services.device_register(
            user=request.user,
            address=serializer.validated_data["address"],
            name=serializer.validated_data["name"],
            app=serializer.validated_data["app"],
        )
        return Response(
            DeviceSerializer(device).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class DeviceDetailView(APIView):
    permission_classes = [IsEndUser]

    @extend_schema(responses={204: None})
    def delete(self, request, device_id: int):
        if not services.device_delete(user=request.user, device_id=device_id):
            raise exceptions.NotFound("No such device.")
        return Response(status=status.HTTP_204_NO_CONTENT)


class TopicListView(APIView):
    permission_classes = [IsEndUser]

    @extend_schema(responses={200: TopicListSerializer})
    def get(self, request):
        return Response({"results": selectors.topics_of_user(request.user)})


class TopicSubscriptionView(APIView):
    permission_classes = [IsEndUser]

    def _topic(self, name: str) -> str:
        serializer = TopicNameSerializer(data={"name": name})
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data["name"]

    @extend_schema(request=None, responses={204: None})
    def put(self, request, name: str):
        services.topic_subscribe(user=request.user, topic=self._topic(name))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses={204: None})
    def delete(self, request, name: str):
        services.topic_unsubscribe(user=request.user, topic=self._topic(name))
        return Response(status=status.HTTP_204_NO_CONTENT)


class PreferencesView(APIView):
    permission_classes = [IsEndUser]

    @extend_schema(responses={200: PreferencesSerializer})
    def get(self, request):
        return Response(preferences.preferences_get(request.user))

    @extend_schema(request=PreferencesSerializer, responses={200: PreferencesSerializer})
    def put(self, request):
        serializer = PreferencesSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        quiet = serializer.validated_data["quiet_hours"]
        preferences.preferences_set(
            request.user,
            quiet_start=quiet["start"] if quiet else None,
            quiet_end=quiet["end"] if quiet else None,
            timezone=quiet["timezone"] if quiet else "UTC",
            muted_topics=serializer.validated_data["muted_topics"],
        )
        return Response(preferences.preferences_get(request.user))
