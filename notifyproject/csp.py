"""Content-Security-Policy on every HTML page (Django 5.2 has none built in).

The policy is CLARION_CONTENT_SECURITY_POLICY. Pages keep their scripts and styles in static
files, so no inline script or style needs an exception; a response that set its own header
keeps it. Only documents get it: the service worker (/sw.js) runs under the policy of its own
script response, and the notifications it shows may carry icons from the app's own hosts.
"""

from django.conf import settings

HEADER = "Content-Security-Policy"


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        policy = settings.CLARION_CONTENT_SECURITY_POLICY
        is_page = response.get("Content-Type", "").startswith("text/html")
        if policy and is_page and HEADER not in response:
            response[HEADER] = policy
        return response
