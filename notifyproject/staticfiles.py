"""WhiteNoise for the static files, without making every other request borrow a thread.

WhiteNoise's middleware is sync-only, so under ASGI Django would run it (and everything
around it) in a thread for every request, including each waiting long-poll and SSE stream.
This subclass is async-capable: a request that is not for a static file goes straight on in
the event loop, and only a static file is served from a thread.
"""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from whitenoise.middleware import WhiteNoiseMiddleware


class AsyncCapableWhiteNoiseMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        super().__init__(get_response)
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request):
        path = request.path_info
        if not self.autorefresh:
            static_file = self.files.get(path)
        elif path.startswith(self.static_prefix):
            static_file = await sync_to_async(self.find_file)(path)  # DEBUG: looks on disk
        else:
            static_file = None
        if static_file is None:
            return await self.get_response(request)
        return await sync_to_async(self.serve)(static_file, request)
