"""daphne as a release that hands `send` to the application another way would run it: a plain
closure instead of `functools.partial(server.handle_reply, protocol)`, so the protocol cannot be
found behind `send` (realtime/transport.py). Everything else is the installed daphne.

    python -m tests.support.daphne_changed <daphne's arguments>
"""

import daphne.server
from daphne.cli import CommandLineInterface


def _closure(func, *bound):
    def call(*args, **kwargs):
        return func(*bound, *args, **kwargs)

    return call


daphne.server.partial = _closure

if __name__ == "__main__":
    CommandLineInterface.entrypoint()
