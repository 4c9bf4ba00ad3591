"""The ASGI entry point uvicorn imports: the app built from the environment,
and the HTTP protocol uvicorn serves it with (``threadline serve`` names both)."""

import gc

from threadline.app import create_app
from threadline.config import load_settings
from threadline.uvicorn_seam import protocol_class

settings = load_settings()
app = create_app(settings)
http_protocol = protocol_class(settings.http_header_timeout_seconds)

# The schema, mappers and modules built above live as long as the process: keep
# the cyclic collector from walking them again and again, and let it run less
# often (each request allocates many short-lived objects, few in cycles).
gc.collect()
gc.freeze()
gc.set_threshold(20_000, 20, 20)
