"""docker-compose.yml is checked by reading it (there is no Docker here): its structure, and every
service's command parsed by the real `tessera` CLI, so a renamed command or flag fails here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from ops.cli import app
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
TESSERA = {name: s for name, s in SERVICES.items() if s.get("image") == "tessera:local"}


def _parse(args: list[str]) -> Any:
    """Parse `tessera ARGS` as the CLI would, down to the leaf command's context; raises on an
    unknown command or flag, or a bad value. (Typer carries its own copy of click: its classes are
    not click's, so groups are told by what they can do.)"""
    command: Any = typer.main.get_command(app)
    ctx = command.make_context("tessera", list(args))
    while hasattr(command, "resolve_command"):
        name, sub, rest = command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        assert sub is not None, f"no command {name!r}"
        command, ctx = sub, sub.make_context(sub.name or name or "", rest, parent=ctx)
    return ctx


def test_every_tessera_service_runs_a_real_command_with_real_flags() -> None:
    assert set(TESSERA) == {"migrate", "worker", "scheduler", "api"}
    for name, service in TESSERA.items():
        ctx = _parse(service["command"])
        assert ctx.command.name == service["command"][0], name


def test_a_misspelt_flag_would_be_caught() -> None:
    with pytest.raises(Exception, match="No such option: --metric-port"):
        _parse(["worker", "--metric-port", "9100"])
    with pytest.raises(Exception, match="No such command"):
        _parse(["wroker"])


def test_workers_scale_and_are_watched() -> None:
    worker = SERVICES["worker"]
    # `docker compose up --scale worker=N` needs replicas that can coexist
    assert "container_name" not in worker and "ports" not in worker
    # every replica serves every shard and names itself; --spread shares the shards out among them
    assert "--shards" not in worker["command"] and "--name" not in worker["command"]
    assert _parse(worker["command"]).params["spread"] is True
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "healthcheck" in worker
    port = worker["command"][worker["command"].index("--metrics-port") + 1]
    prometheus = yaml.safe_load((ROOT / "ops" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["tessera-worker"]["dns_sd_configs"][0]["port"] == int(port)
    assert jobs["tessera-api"]["static_configs"][0]["targets"] == ["api:8000"]


def test_the_api_serves_the_dashboard_port_and_checks_readiness() -> None:
    api = SERVICES["api"]
    ctx = _parse(api["command"])
    assert ctx.params["port"] == 8000 and ctx.params["host"] == "0.0.0.0"
    assert "8000:8000" in api["ports"]
    assert "readyz" in " ".join(api["healthcheck"]["test"])
    volume = SERVICES["prometheus"]["volumes"][0].split(":")[0]
    assert (ROOT / Path(volume)).is_file()


def test_services_start_in_order_and_are_checked_where_they_listen() -> None:
    """The database and Redis healthy, then the one-shot migration, then the long-running roles;
    each healthcheck asks the port its command serves on."""
    ready = {"postgres": {"condition": "service_healthy"}, "redis": {"condition": "service_healthy"}}
    assert SERVICES["migrate"]["depends_on"] == {"postgres": ready["postgres"]}
    assert SERVICES["migrate"]["restart"] == "no"
    for name in ("worker", "scheduler", "api"):
        assert SERVICES[name]["depends_on"] == {
            **ready,
            "migrate": {"condition": "service_completed_successfully"},
        }, name
    for name in ("postgres", "redis"):
        assert SERVICES[name]["healthcheck"]["test"], name
    for name, flag in (("worker", "--metrics-port"), ("api", "--port")):
        port = _parse(SERVICES[name]["command"]).params[flag.lstrip("-").replace("-", "_")]
        assert f"http://127.0.0.1:{port}/" in " ".join(SERVICES[name]["healthcheck"]["test"]), name


def test_every_process_agrees_on_the_shard_count() -> None:
    shards = {s["environment"]["TESSERA_SHARDS"] for s in TESSERA.values()}
    assert shards == {"16"}
