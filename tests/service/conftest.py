from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.db import make_engine, make_session_factory
from helpers import settings_from_env


@pytest.fixture
def make_client():
    """make_client(env, **setting_overrides) -> a TestClient of the real app on that deployment."""
    from service.main import create_app
    clients = []

    def make(env: dict[str, str], **overrides) -> TestClient:
        settings = settings_from_env(env).model_copy(update=overrides)
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def sessions(any_env):
    engine = make_engine(any_env["DELTAMU_DATABASE_URL"])
    yield make_session_factory(engine)
    engine.dispose()
