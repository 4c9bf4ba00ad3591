"""The ASGI entry point uvicorn imports: the app built from the environment."""

import gc

from threadline.app import create_app
from threadline.config import load_settings

app = create_app(load_settings())

# The schema, mappers and modules built above live as long as the process: keep
# the cyclic collector from walking them again and again, and let it run less
# often (each request allocates many short-lived objects, few in cycles).
gc.collect()
gc.freeze()
gc.set_threshold(20_000, 20, 20)
