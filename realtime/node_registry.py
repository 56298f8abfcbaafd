"""Where each node is reached: its Redis channel's name, and this process's own nodes.

Publishers need only this, not the node itself: the node reads users' stream positions from
delivery, and the publish side, which delivery imports, must import nothing of delivery.
"""

import asyncio
import threading
import weakref
from collections.abc import Callable

CHANNEL_PREFIX = "clarion:node:"

# One node per event loop: one per web process, several where tests run several loops.
_nodes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_nodes_lock = threading.Lock()


def channel_for(node_id: str) -> str:
    return f"{CHANNEL_PREFIX}{node_id}"


def node_of_loop(loop: asyncio.AbstractEventLoop, create: Callable):
    """The node of `loop`, made by `create(loop)` the first time."""
    with _nodes_lock:
        node = _nodes.get(loop)
        if node is None:
            node = _nodes[loop] = create(loop)
        return node


def local_nodes() -> list:
    """This process's nodes whose loops still run (embedded publishers dispatch to them directly)."""
    with _nodes_lock:
        return [node for loop, node in _nodes.items() if not loop.is_closed()]
