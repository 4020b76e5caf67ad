"""docker-compose.yml and the Dockerfile, checked without Docker: the services, health checks, GPU reservation,
volumes, and that every command they run exists here and is the one the e2e tests run."""
from __future__ import annotations

import re

import pytest
import yaml

from service.cli import build_parser
from helpers import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_services_and_their_order(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "api", "worker"}
    for name in ("postgres", "redis", "api"):
        assert services[name]["healthcheck"]["test"], name
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_worker_reserves_the_gpus(compose):
    devices = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] and d["driver"] == "nvidia" for d in devices)


def test_volumes_are_declared_and_used(compose):
    declared = set(compose["volumes"])
    used = {v.split(":")[0] for s in compose["services"].values() for v in s.get("volumes", [])}
    assert {"pgdata", "redisdata"} <= declared and {"pgdata", "redisdata"} <= used


def test_the_environment_points_at_postgres_and_redis(compose):
    for name in ("migrate", "api", "worker"):
        env = compose["services"][name]["environment"]
        assert env["DELTAMU_DATABASE_URL"].startswith("postgresql+psycopg://") and "@postgres:5432/" in env[
            "DELTAMU_DATABASE_URL"]
        assert env["DELTAMU_BROKER_URL"] == "redis://redis:6379/0"
        assert "DELTAMU_API_TOKENS" in env


@pytest.mark.parametrize("service, subcommand", [("migrate", "migrate"), ("api", "api"), ("worker", "worker")])
def test_commands_exist_and_match_the_tests(compose, service, subcommand):
    """The commands compose runs parse with the real `deltamu` parser; the e2e tests run the same subcommands
    (`deltamu migrate`, `deltamu api`, and the argv `deltamu worker` builds in service.launch)."""
    command = compose["services"][service]["command"]
    assert command[0] == "deltamu" and command[1] == subcommand
    args = build_parser().parse_args(command[1:])
    assert args.func.__name__ == f"cmd_{subcommand}"


def test_dockerfile_copies_what_exists(compose):
    text = DOCKERFILE.read_text()
    for line in re.findall(r"^COPY (.+)$", text, flags=re.M):
        *sources, _dest = line.split()
        for source in sources:
            assert (REPO_ROOT / source).exists(), source
    assert re.search(r'^CMD \["deltamu", "api"\]', text, flags=re.M)
    assert compose["services"]["migrate"]["build"] == "."
    images = {s.get("image") for name, s in compose["services"].items() if name in ("migrate", "api", "worker")}
    assert len(images) == 1                                   # one image, three roles
