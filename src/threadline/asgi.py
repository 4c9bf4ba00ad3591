"""The ASGI entry point uvicorn imports: the app built from the environment."""

from threadline.app import create_app
from threadline.config import load_settings

app = create_app(load_settings())
