"""compose/docker-compose.yml checked against the code (Docker cannot run
here): every service, image, command, environment variable and volume is
one the code supports; every ${VAR} is defined; no secret is written in."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml

from backupflows.alerts.config import load_alert_config
from backupflows.cli import _COMMANDS, cli
from backupflows.jobs.config import load_job_config
from backupflows.settings import load_settings
from backupflows.tasks.queues import SHARED_QUEUES, daemon_queue

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose"
VAR = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?::?(?P<op>[-?])(?P<arg>[^}]*))?\}")
OWN_IMAGE = "${BACKUPFLOWS_IMAGE:-backupflows:local}"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dotenv() -> dict[str, str]:
    out = {}
    for line in (COMPOSE / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def _interpolate(value: str, env: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        got = env.get(m["name"], "")
        if got == "" and m["op"] == "-":
            return m["arg"]
        assert got or m["op"] != "?", f"{m['name']} must be set ({m['arg']})"
        return got
    return VAR.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


def _own(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in spec["services"].items() if s.get("image") == OWN_IMAGE}


def _names_the_code_reads() -> set[str]:
    """BACKUPFLOWS_* names the settings loaders ask for, plus names written out in the code."""
    asked: set[str] = set()

    class Recorder(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:
            asked.add(key)
            return default

    for loader in (load_settings, load_job_config, load_alert_config):
        loader(Recorder())
    for path in [*(ROOT / "backupflows").rglob("*.py"), ROOT / "celeryconfig.py"]:
        asked |= set(re.findall(r"\bBACKUPFLOWS_[A-Z0-9_]+\b", path.read_text()))
    return {name for name in asked if not name.startswith("BACKUPFLOWS_TEST_")}


def test_services_are_the_stack_the_issue_asks_for(spec: dict[str, Any]) -> None:
    services = spec["services"]
    assert {"mongo1", "mongo2", "mongo3", "mongo-init", "redis", "postgres", "minio",
            "minio-init", "catalog-upgrade",
            "agent", "daemon1", "storage", "beat", "serve", "flower"} <= set(services)
    for name, svc in services.items():
        image = svc["image"]
        assert image == OWN_IMAGE or re.fullmatch(
            r"(mongo|redis|postgres):\d+(\.\d+)?|minio/(minio|mc):RELEASE\.[0-9TZ-]+", image), \
            f"{name}: unpinned or unknown image {image}"
        if svc.get("restart") != "no" and name != "beat":
            assert "healthcheck" in svc, f"{name} has no health check"
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
    init = " ".join(services["mongo-init"]["command"])
    for member in ("mongo1:27017", "mongo2:27017", "mongo3:27017"):
        assert member in init
    assert "rs.initiate" in init and "_id: 'rs0'" in init
    assert all(services[m]["command"][:3] == ["mongod", "--replSet", "rs0"]
               for m in ("mongo1", "mongo2", "mongo3"))


def test_the_image_builds_from_this_checkout(spec: dict[str, Any]) -> None:
    build = next(iter(_own(spec).values()))["build"]
    dockerfile = (COMPOSE / build["context"] / build["dockerfile"]).resolve()
    assert dockerfile == COMPOSE / "Dockerfile"
    text = dockerfile.read_text()
    assert text.startswith("# ") and "FROM python:3.11-slim" in text and "pip install ." in text
    for line in text.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"
    for needed in ("pyproject.toml", "README.md", "celeryconfig.py", "backupflows",
                   "migrations"):  # what 'pip install .' needs (readme, data files)
        assert needed in text


def test_commands_are_commands_of_the_code(spec: dict[str, Any]) -> None:
    ctx = click.Context(cli)
    for name, svc in _own(spec).items():
        argv = svc["command"]
        if argv[0] == "celery":  # Flower, on the backupflows Celery app
            assert argv[1:4] == ["-A", "backupflows.tasks.app", "flower"], name
            import flower  # noqa: F401 - a dependency of backupflows
            continue
        assert argv[0] == "backupflows" and argv[1] in _COMMANDS, f"{name}: {argv}"
        command = cli.get_command(ctx, argv[1])
        assert command is not None
        args = argv[2:]
        if isinstance(command, click.Group):
            command = command.get_command(ctx, args[0])
            assert command is not None, f"{name}: {argv}"
            args = args[1:]
        parsed = command.make_context(argv[1], list(args))  # raises on a bad option
        assert not parsed.params.get("celery_args"), f"{name}: unknown options {args}"


def test_worker_queues_exist(spec: dict[str, Any], dotenv: dict[str, str]) -> None:
    consumed: set[str] = set()
    for name, svc in _own(spec).items():
        argv = svc["command"]
        if argv[:2] != ["backupflows", "worker"]:
            continue
        daemon_id = svc["environment"].get("BACKUPFLOWS_DAEMON_ID")
        queues = argv[argv.index("-Q") + 1].split(",")
        for q in queues:
            assert q in SHARED_QUEUES or (daemon_id and q == daemon_queue(daemon_id)), \
                f"{name} consumes unknown queue {q}"
        if any(q.startswith("daemon.") for q in queues):
            heads = svc["environment"]["BACKUPFLOWS_HEADS_DIR"]
            assert any(v.endswith(f":{heads}") and v.startswith("heads-")
                       for v in svc["volumes"]), f"{name}: heads not on its own volume"
        consumed |= set(queues)
    assert consumed >= set(SHARED_QUEUES)  # every kind of work has a worker


def test_environment_is_what_the_code_reads(spec: dict[str, Any],
                                            dotenv: dict[str, str]) -> None:
    known = _names_the_code_reads()
    for name, svc in _own(spec).items():
        env = {k: _interpolate(str(v), dotenv) for k, v in svc["environment"].items()}
        for key in env:
            if key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # boto3 reads them
                continue
            assert key.startswith("BACKUPFLOWS_"), f"{name}: {key} is not ours"
            assert key in known, f"{name}: {key} is read nowhere in the code"
        settings = load_settings(env)  # values parse (a ConfigError names the variable)
        load_job_config(env)
        alerts = load_alert_config(env)
        assert settings.broker_url.startswith("redis://redis:")
        assert settings.catalog_url.startswith("postgresql+psycopg://backupflows:")
        assert settings.catalog_url.endswith("@postgres:5432/backupflows")
        assert alerts.webhook_url is None  # empty by default
        mounts = {v.split(":", 1)[1] for v in svc["volumes"]}
        for directory in (settings.data_dir, settings.store_dir):
            assert str(directory) in mounts, f"{name}: {directory} is not on a volume"
        _check_store_url(spec, settings.store_url, env)
        if svc["command"][:2] == ["backupflows", "serve"]:
            assert len(env["BACKUPFLOWS_API_TOKEN"]) >= 16
    pg = spec["services"]["postgres"]["environment"]
    assert pg["POSTGRES_USER"] == "backupflows" and pg["POSTGRES_DB"] == "backupflows"


def _check_store_url(spec: dict[str, Any], url: str, env: dict[str, str]) -> None:
    """The object store is the MinIO service, in a bucket minio-init creates, with
    its credentials; the URL is one the S3 backend accepts."""
    from backupflows.storage.backends import open_raw_backend
    from backupflows.storage.backends.s3 import S3Backend

    backend = open_raw_backend(url)
    assert isinstance(backend, S3Backend)
    parts = urlsplit(url)
    assert "endpoint_url=http://minio:9000" in parts.query
    init = " ".join(spec["services"]["minio-init"]["command"])
    assert f"mc mb --ignore-existing local/{parts.hostname}" in init
    minio = spec["services"]["minio"]
    assert minio["command"][:2] == ["server", "/data"]
    for ours, theirs in (("AWS_ACCESS_KEY_ID", "MINIO_ROOT_USER"),
                         ("AWS_SECRET_ACCESS_KEY", "MINIO_ROOT_PASSWORD")):
        assert env[ours]  # set from compose/.env
        assert f"${{{theirs}:?" in str(spec["x-backupflows-env"][ours])
        assert f"${{{theirs}:?" in str(minio["environment"][theirs])


def test_volumes_declared_and_variables_defined(spec: dict[str, Any],
                                                dotenv: dict[str, str]) -> None:
    declared = set(spec["volumes"])
    used = set()
    for name, svc in spec["services"].items():
        for v in svc.get("volumes", []):
            source = v.split(":", 1)[0]
            assert source in declared, f"{name}: volume {source} not declared"
            used.add(source)
    assert used == declared
    heads = [s for s in _own(spec).values() for v in s["volumes"] if v.startswith("heads-")]
    assert len(heads) == len({id(s) for s in heads})  # a heads volume per daemon
    text = (COMPOSE / "docker-compose.yml").read_text()
    referenced = {m["name"] for m in VAR.finditer(text.replace("$$", ""))}  # $$: for the shell
    assert referenced == set(dotenv), "compose/.env.example must list every ${VAR}, no more"


def test_no_secret_is_written_in(spec: dict[str, Any]) -> None:
    text = (COMPOSE / "docker-compose.yml").read_text()
    for line in text.splitlines():
        if re.search(r"(?i)(password|token)\s*:", line):
            assert "${" in line, f"a literal secret: {line.strip()}"
    assert "postgresql+psycopg://backupflows:${POSTGRES_PASSWORD" in text


def test_readme_commands_exist() -> None:
    readme = (COMPOSE / "README.md").read_text()
    code = re.findall(r"```sh\n(.*?)```", readme, re.S) + re.findall(r"`([^`\n]+)`", readme)
    verbs = set(re.findall(r"\bbackupflows ([a-z][a-z-]*)", "\n".join(code)))
    assert verbs and verbs <= set(_COMMANDS), verbs - set(_COMMANDS)
