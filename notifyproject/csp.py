"""Content-Security-Policy on every response (Django 5.2 has none built in).

The policy is CLARION_CONTENT_SECURITY_POLICY. Pages keep their scripts and styles in static
files, so no inline script or style needs an exception; a response that set its own header
keeps it.
"""

from django.conf import settings

HEADER = "Content-Security-Policy"


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        policy = settings.CLARION_CONTENT_SECURITY_POLICY
        if policy and HEADER not in response:
            response[HEADER] = policy
        return response
