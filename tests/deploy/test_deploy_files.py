"""Static checks of deploy/ (no container engine or cluster here): the files parse, the Dagster
services have health checks, and the instance config validates against Dagster's schema with
the DockerRunLauncher's own config type."""

from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_compose_services_have_health_checks_and_a_shared_log_volume():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("cti-assets-code", "dagster-webserver", "dagster-daemon"):
        assert services[name]["healthcheck"]["test"], name
    assert compose["networks"]["default"]["name"] == "cti-assets"
    assert compose["volumes"]["computelogs"]["name"] == "cti-assets-compute-logs"
    assert "computelogs:/opt/dagster/compute_logs" in services["dagster-webserver"]["volumes"]


def test_deploy_instance_config_validates(monkeypatch):
    pytest.importorskip("dagster_docker", reason="dagster-docker not installed (deploy extra)")
    pytest.importorskip("dagster_postgres", reason="dagster-postgres not installed (postgres)")
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_docker import DockerRunLauncher

    for name in ("HOST", "USER", "PASSWORD", "DB"):
        monkeypatch.setenv(f"DAGSTER_POSTGRES_{name}", "x")
    config, _ = dagster_instance_config(str(DEPLOY))
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    result = process_config(DockerRunLauncher.config_type(), launcher["config"])
    assert result.success, result.errors
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    volumes = {v["name"] for v in compose["volumes"].values() if v and "name" in v}
    for mount in launcher["config"]["container_kwargs"]["volumes"]:
        assert mount.split(":")[0] in volumes, mount


def test_helm_values_parse_and_name_the_guard():
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    custom = values["dagsterDaemon"]["runCoordinator"]["config"]["customRunCoordinator"]
    assert custom["class"] == "PartitionGuardRunCoordinator"
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
