"""Content-Security-Policy on every HTML page (Django 5.2 has none built in).

The policy is CLARION_CONTENT_SECURITY_POLICY. Pages keep their scripts and styles in static
files, so no inline script or style needs an exception; a response that set its own header
keeps it. Only documents get it: the service worker (/sw.js) runs under the policy of its own
script response, and the notifications it shows may carry icons from the app's own hosts.
Async-capable, so an async view (a long wait) under Django's async handler keeps its event loop.
"""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings

HEADER = "Content-Security-Policy"


class ContentSecurityPolicyMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return self._with_policy(self.get_response(request))

    async def __acall__(self, request):
        return self._with_policy(await self.get_response(request))

    @staticmethod
    def _with_policy(response):
        policy = settings.CLARION_CONTENT_SECURITY_POLICY
        is_page = response.get("Content-Type", "").startswith("text/html")
        if policy and is_page and HEADER not in response:
            response[HEADER] = policy
        return response
