"""METRICS decides where /metrics is served: on the app (the development default), nowhere
(the production default, and ``off``), or on a port of its own that operators keep private.
"""

from __future__ import annotations

import gc
import logging

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr, ValidationError

from tests.conftest import free_port, start_server, stop_server
from threadline.config import Environment, Settings

METRIC = "threadline_graphql_operations_total"


def production(settings: Settings, **update: object) -> Settings:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return settings.model_copy(
        update={
            "threadline_env": Environment.PRODUCTION,
            "clerk_jwt_key": SecretStr(pem),
            "dev_auth_secret": None,
            **update,
        }
    )


async def metrics_status(settings: Settings) -> int:
    server = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
            response = await http.get("/metrics")
            if response.status_code == 200:
                assert METRIC in response.text
            return response.status_code
    finally:
        await stop_server(server)


def with_metrics(settings: Settings, value: str | None) -> Settings:
    return settings.model_copy(update={"metrics": Settings(metrics=value, _env_file=None).metrics})  # type: ignore[call-arg]


async def test_development_serves_metrics_on_the_app_by_default(settings: Settings) -> None:
    assert settings.metrics is None
    assert await metrics_status(settings) == 200


async def test_production_does_not_serve_metrics_on_the_app_by_default(settings: Settings) -> None:
    assert await metrics_status(production(settings)) == 404


async def test_metrics_off_and_app_are_honoured_in_either_environment(settings: Settings) -> None:
    assert await metrics_status(with_metrics(settings, "off")) == 404
    assert await metrics_status(production(with_metrics(settings, "app"))) == 200


async def test_metrics_on_a_port_of_their_own_and_not_on_the_app(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    own = production(with_metrics(settings, f"127.0.0.1:{port}"))
    server = await start_server(own)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await http.get(f"{server.base}/metrics")).status_code == 404
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
            assert response.status_code == 200
            assert METRIC in response.text
            # A second process with the same setting (--workers 2) serves on, and says why
            # its metrics are not on that port.
            with caplog.at_level(logging.WARNING, logger="threadline.app"):
                second = await start_server(own)
                try:
                    assert (await http.get(f"{second.base}/healthz")).status_code == 200
                finally:
                    await stop_server(second)
            assert any("metrics not served" in r.getMessage() for r in caplog.records)
    finally:
        await stop_server(server)
    # Stopped with the app: the port is free again.
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(timeout=5) as http:
            await http.get(f"http://127.0.0.1:{port}/metrics")


def test_metrics_values_are_checked_when_settings_are_read() -> None:
    def read(value: str) -> str | None:
        return Settings(metrics=value, _env_file=None).metrics  # type: ignore[call-arg]

    assert read("9100") == "0.0.0.0:9100"
    assert read("10.0.0.5:9100") == "10.0.0.5:9100"
    assert read("ON") == "app"
    assert read("off") == "off"
    assert read(" ") is None
    for bad in ("yes", "70000", "host:", "9100:x"):
        with pytest.raises(ValidationError, match="METRICS"):
            read(bad)


async def test_collector_pauses_are_timed_by_generation(settings: Settings) -> None:
    server = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:

            async def full_collections() -> float:
                text = (await http.get("/metrics")).text
                return next(
                    sample.value
                    for family in text_string_to_metric_families(text)
                    if family.name == "threadline_gc_pause_seconds"
                    for sample in family.samples
                    if sample.name.endswith("_count") and sample.labels["generation"] == "2"
                )

            before = await full_collections()
            gc.collect()
            assert await full_collections() >= before + 1
    finally:
        await stop_server(server)
