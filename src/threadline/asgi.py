"""The ASGI entry point uvicorn imports: the app built from the environment,
and the HTTP protocol uvicorn serves it with (``threadline serve`` names both)."""

from threadline.app import create_app
from threadline.config import load_settings
from threadline.uvicorn_seam import protocol_class

settings = load_settings()
app = create_app(settings)
http_protocol = protocol_class(settings.http_header_timeout_seconds)
