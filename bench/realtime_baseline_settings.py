"""Clarion's settings with the channel layer the stock baselines are asked to use (bench only).

BENCH_CHANNEL_LAYER=core selects channels_redis's list-based RedisChannelLayer; anything else
keeps the RedisPubSubChannelLayer Clarion's settings configure.
"""

import os

from notifyproject.settings import *  # noqa: F403
from notifyproject.settings import REDIS_URL

CHANNEL_LAYER_BACKENDS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}
BENCH_CHANNEL_LAYER = os.environ.get("BENCH_CHANNEL_LAYER", "pubsub")

if BENCH_CHANNEL_LAYER == "core":
    CHANNEL_LAYERS = {
        "default": {"BACKEND": CHANNEL_LAYER_BACKENDS["core"], "CONFIG": {"hosts": [REDIS_URL]}}
    }
