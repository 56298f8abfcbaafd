"""How our authentication classes appear in the OpenAPI schema (drf-spectacular extensions)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class EndUserTokenScheme(OpenApiAuthenticationExtension):
    target_class = "devices.authentication.EndUserTokenAuthentication"
    name = "endUserToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "End-user token: `Authorization: Token <key>`, minted by /api/v1/client-tokens/ "
            "or /api/v1/auth/token/.",
        }


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "delivery.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A product backend's API key, scopes `send` and/or `read`.",
        }


class SessionScheme(OpenApiAuthenticationExtension):
    target_class = "notifyproject.api.CsrfSessionAuthentication"
    name = "session"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": "sessionid",
            "description": "This site's session (CSRF enforced).",
        }
