"""Settings for the stock Channels baselines of bench/realtime_throughput.py: Clarion's, with
the channel layer chosen by $BENCH_CHANNEL_LAYER ("core": RedisChannelLayer, the list-based
layer with its default per-channel capacity of 100; "pubsub": RedisPubSubChannelLayer).
A prefix of its own keeps its pub/sub channels apart from other benchmarks on the same Redis
(pub/sub channels are not per database).
"""

import os

from notifyproject.settings import *  # noqa: F403
from notifyproject.settings import REDIS_URL

LAYER_BACKENDS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": LAYER_BACKENDS[os.environ.get("BENCH_CHANNEL_LAYER", "pubsub")],
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, "max_connections": 1000, "socket_timeout": None}],
            "prefix": os.environ.get("BENCH_CHANNEL_PREFIX", "clarion-throughput"),
        },
    }
}
