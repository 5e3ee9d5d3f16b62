"""Playback: find, scrub and watch any recorded second, and cut a clip in its native codec.

The api serves it (see docs/architecture.md, Playback): `routes(app)` adds the HTTP routes (listed in
`argus_api.playback.routes`), `setup(app, store=..., config=..., emitter=..., bus=...)` gives them the object store,
settings, audit emitter and bus; the pool is the camera routes' `cameras.POOL_KEY`.
"""

from argus_api.playback.common import PLAYBACK_KEY
from argus_api.playback.config import PlaybackConfig
from argus_api.playback.routes import routes, setup

__all__ = ["PLAYBACK_KEY", "PlaybackConfig", "routes", "setup"]
