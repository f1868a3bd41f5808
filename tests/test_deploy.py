"""deploy/: the files parse, agree with each other and with the package (no docker or
Kubernetes here: checked statically)."""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from pathlib import Path

import dask.config
import pytest
import yaml
from dask.utils import parse_timedelta

import ps1dask.config  # noqa: F401 - registers the ps1dask config defaults
from ps1dask.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
IMAGE = "ps1dask/ps1dask:latest"
LEASE_ENV = "DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_TIMEOUT"
URL_ENV = "DASK_PS1DASK__SERVICE__URL"
CONFIG_ENVS = (LEASE_ENV, URL_ENV)
#: Reading PS1 from the public bucket, writing stores to an object store (no shared disk).
S3_ENV = {"DASK_PS1DASK__S3__URL": "s3://stpubdata/panstarrs/ps1/public"}
REGION = "us-east-1"  # where stpubdata lives


def _yaml(name: str) -> object:
    return yaml.safe_load((DEPLOY / name).read_text())


def _default(value: str) -> str:
    """The default of a compose ``${VAR:-default}`` value (or the value itself)."""
    match = re.fullmatch(r"\$\{\w+:-(.*)\}", str(value))
    return match.group(1) if match else str(value)


def _env_key(name: str) -> str:
    """The dask config key an environment variable sets (dask's own translation)."""
    (key,) = dask.config.collect_env({name: "x"}).keys()
    sub = dask.config.collect_env({name: "x"})[key]
    parts = [key]
    while isinstance(sub, dict):
        (k,) = sub.keys()
        parts.append(k)
        sub = sub[k]
    return ".".join(parts).replace("_", "-")  # dask reads - and _ alike


def _seconds(value: object) -> float:
    return float(parse_timedelta(value, default="s"))


def _request_bound() -> float:
    return _seconds(dask.config.get("ps1dask.http.connect-timeout")) + _seconds(
        dask.config.get("ps1dask.http.read-timeout")
    )


@pytest.fixture(scope="module")
def compose():
    return _yaml("docker-compose.yml")


@pytest.fixture(scope="module")
def manifests():
    return list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))


def _k8s_containers(manifests) -> dict[str, dict]:
    out = {}
    for doc in manifests:
        if doc["kind"] == "DaskCluster":
            for role in ("worker", "scheduler"):
                for c in doc["spec"][role]["spec"]["containers"]:
                    out[f"{role}/{c['name']}"] = c
        elif doc["kind"] == "Pod":
            for c in doc["spec"]["containers"]:
                out[f"pod/{c['name']}"] = c
    return out


def test_every_yaml_parses():
    for path in sorted(DEPLOY.glob("*.y*ml")):
        docs = list(yaml.safe_load_all(path.read_text()))
        assert docs and all(isinstance(d, dict) for d in docs), path.name


def test_env_vars_name_real_config_keys():
    # the variables every deployment sets map to keys that dask / ps1dask really read
    # (distributed's defaults load with distributed, which `import ps1dask` no longer imports)
    import distributed  # noqa: F401

    assert _env_key(LEASE_ENV) == "distributed.scheduler.locks.lease-timeout"
    assert _env_key(URL_ENV) == "ps1dask.service.url"
    for name in CONFIG_ENVS:
        assert dask.config.get(_env_key(name)) is not None


def test_compose_services(compose):
    services = compose["services"]
    assert {"scheduler", "worker", "emulator", "notebook", "client"} <= set(services)
    for name in ("scheduler", "worker", "client", "emulator"):
        assert _default(services[name]["image"]) == IMAGE, name
        env = services[name]["environment"]
        for key in CONFIG_ENVS:
            assert key in env, (name, key)
        assert _seconds(_default(env[LEASE_ENV])) > _request_bound(), name
        assert _default(env[URL_ENV]).startswith("https://ps1images.stsci.edu")
    env = services["notebook"]["environment"]
    assert all(key in env for key in CONFIG_ENVS)
    # the scheduler listens where the workers and the client look for it
    sched = services["scheduler"]["command"]
    port = sched[sched.index("--port") + 1]
    assert services["worker"]["command"][:3] == ["dask", "worker", f"tcp://scheduler:{port}"]
    assert services["client"]["environment"]["DASK_SCHEDULER_ADDRESS"] == f"tcp://scheduler:{port}"
    # no shared file system: workers mount nothing (stores go to an object store), read
    # the public bucket and get the output bucket's AWS_* credentials from the environment
    assert "volumes" not in services["worker"]
    for name in ("client", "notebook"):
        assert "data:/data" in services[name]["volumes"], name
    assert "data" in compose["volumes"]
    for name in ("scheduler", "worker", "client", "notebook"):
        env = services[name]["environment"]
        for key, value in S3_ENV.items():
            assert _default(env[key]) == value, (name, key)
        assert _default(env["AWS_DEFAULT_REGION"]) == REGION
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env), name
    # optional services are behind profiles; nothing is published beyond loopback
    assert services["emulator"]["profiles"] == ["emulator"]
    assert services["notebook"]["profiles"] == ["notebook"]
    assert "ports" not in services["emulator"]
    for name, svc in services.items():
        for port_spec in svc.get("ports", []):
            assert str(port_spec).startswith("127.0.0.1:"), (name, port_spec)
    emulator = services["emulator"]["command"]
    assert emulator[:2] == ["ps1dask", "emulator"]
    build_parser().parse_args(emulator[1:])  # a valid ps1dask command line
    for name in ("scheduler", "notebook"):
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert services["notebook"]["build"]["target"] == "notebook"


def test_kubernetes_manifest(manifests):
    kinds = [d["kind"] for d in manifests]
    assert kinds == ["DaskCluster", "Pod"]  # no shared volume: stores go to an object store
    cluster, pod = manifests
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    name = cluster["metadata"]["name"]
    containers = _k8s_containers(manifests)
    assert set(containers) == {"worker/worker", "scheduler/scheduler", "pod/client"}
    for where, c in containers.items():
        assert c["image"] == IMAGE, where  # the same image as compose
        env = {e["name"]: e["value"] for e in c["env"]}
        for key in CONFIG_ENVS:
            assert key in env, (where, key)
        assert _seconds(env[LEASE_ENV]) > _request_bound()
        for key, value in S3_ENV.items():
            assert env[key] == value, (where, key)
        assert env["AWS_DEFAULT_REGION"] == REGION
        # the output bucket's credentials: an optional Secret (or the pod's IAM role)
        assert {"secretRef": {"name": "ps1dask-output-s3", "optional": True}} in c["envFrom"]
    worker_args = containers["worker/worker"]["args"]
    assert worker_args[:2] == ["dask", "worker"] and "$(DASK_WORKER_NAME)" in worker_args
    assert containers["scheduler/scheduler"]["args"][:2] == ["dask", "scheduler"]
    service = cluster["spec"]["scheduler"]["service"]
    assert service["selector"] == {"dask.org/cluster-name": name, "dask.org/component": "scheduler"}
    comm = next(p for p in service["ports"] if p["name"] == "tcp-comm")
    client_env = {e["name"]: e["value"] for e in containers["pod/client"]["env"]}
    # the operator names the scheduler Service <cluster>-scheduler
    assert client_env["DASK_SCHEDULER_ADDRESS"] == f"tcp://{name}-scheduler:{comm['port']}"
    # workers mount nothing; the client pod has scratch space for its inputs
    assert "volumes" not in cluster["spec"]["worker"]["spec"]
    assert "volumeMounts" not in containers["worker/worker"]
    assert {"name": "data", "emptyDir": {}} in pod["spec"]["volumes"]


def test_same_values_everywhere(compose, manifests):
    """compose, Kubernetes, jobqueue and the baked-in dask.yaml agree on lease and URL."""
    baked = _yaml("dask.yaml")
    lease = _seconds(baked["distributed"]["scheduler"]["locks"]["lease-timeout"])
    url = baked["ps1dask"]["service"]["url"]
    assert lease > _request_bound()
    assert baked["ps1dask"]["http"]["max-concurrency"] <= 10
    env = compose["services"]["worker"]["environment"]
    assert _seconds(_default(env[LEASE_ENV])) == lease and _default(env[URL_ENV]) == url
    for c in _k8s_containers(manifests).values():
        env = {e["name"]: e["value"] for e in c["env"]}
        assert _seconds(env[LEASE_ENV]) == lease and env[URL_ENV] == url
    jq = _yaml("jobqueue.yaml")
    assert _seconds(jq["distributed"]["scheduler"]["locks"]["lease-timeout"]) == lease
    assert jq["ps1dask"]["service"]["url"] == url
    for system in ("slurm", "pbs"):
        prologue = "\n".join(jq["jobqueue"][system]["job-script-prologue"])
        assert (
            f"export {LEASE_ENV}={jq['distributed']['scheduler']['locks']['lease-timeout']}"
            in prologue
        )
        assert f"export {URL_ENV}={url}" in prologue


def _dockerfile() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_installs_the_package():
    instructions = _dockerfile()
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert froms[0].startswith("python:${PYTHON_VERSION}-slim AS base")
    version = next(
        rest for word, rest in instructions if word == "ARG" and rest.startswith("PYTHON_VERSION=")
    )
    pyver = tuple(int(x) for x in version.split("=")[1].split("."))
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert pyver >= tuple(int(x) for x in requires.removeprefix(">=").split("."))
    assert any(rest.startswith("notebook") or "AS notebook" in rest for rest in froms)
    # the whole repository is copied, then pip installs that copy
    copies = [shlex.split(rest) for word, rest in instructions if word == "COPY"]
    src = next(c[-1] for c in copies if c[0] == ".")
    runs = [rest for word, rest in instructions if word == "RUN"]
    assert any(re.search(rf"pip install {re.escape(src)}(\s|$)", r) for r in runs), runs
    assert any("import ps1dask" in r for r in runs)  # the build fails if it does not import
    # the cluster config is baked in where dask looks, and set through the environment too
    assert ["deploy/dask.yaml", "/etc/dask/ps1dask-deploy.yaml"] in copies
    env = " ".join(rest for word, rest in instructions if word == "ENV")
    assert f"{LEASE_ENV}=60s" in env and URL_ENV in env
    assert any(word == "USER" and rest != "root" for word, rest in instructions)


def test_dockerignore_keeps_what_the_build_needs():
    patterns = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed = [
        "pyproject.toml",
        "ps1dask/__init__.py",
        "ps1dask/ps1dask.yaml",
        "ps1dask/data/ps1grid.csv",
        "deploy/dask.yaml",
    ]
    for path in needed:
        assert (ROOT / path).exists(), path
        for pattern in patterns:
            p = pattern.removeprefix("**/")
            assert not fnmatch.fnmatch(path, pattern) and not path.startswith(
                p.rstrip("/") + "/"
            ), (path, pattern)
    assert ".git" in patterns


def test_readme_commands_are_valid():
    """Every `ps1dask ...` command line in deploy/README.md parses with the real CLI."""
    text = (DEPLOY / "README.md").read_text()
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL))
    blocks = re.sub(r"\\\n\s*", " ", blocks)
    commands = re.findall(r"(ps1dask (?:cutouts|emulator) [^\n#]*)", blocks)
    assert len(commands) >= 4
    parser = build_parser()
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "ps1dask", command
        args = parser.parse_args(argv[1:])
        if args.command == "cutouts":
            assert args.scheduler and args.scheduler.startswith("tcp://"), command
    for name in (
        "docker-compose.yml",
        "kubernetes.yaml",
        "jobqueue.yaml",
        "hpc_cluster.py",
        "Dockerfile",
    ):
        assert name in text, name
    for key in (
        "distributed.scheduler.locks.lease-timeout",
        "ps1dask.service.url",
        LEASE_ENV,
        URL_ENV,
    ):
        assert key in text, key


def test_jobqueue_yaml_and_helper():
    source = (DEPLOY / "hpc_cluster.py").read_text()
    compile(source, "hpc_cluster.py", "exec")
    import dask_jobqueue  # in the test extra: this test always runs

    loaded = _yaml("jobqueue.yaml")
    merged = dask.config.merge(dask.config.config, loaded)
    with dask.config.set({k: merged[k] for k in loaded}):
        assert (
            _seconds(dask.config.get("distributed.scheduler.locks.lease-timeout"))
            > _request_bound()
        )
        for cls in (dask_jobqueue.SLURMCluster, dask_jobqueue.PBSCluster):
            cluster = cls(
                scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}
            )
            try:
                script = cluster.job_script()
            finally:
                cluster.close()
            assert f"export {LEASE_ENV}=60s" in script
            assert f"export {URL_ENV}=https://ps1images.stsci.edu" in script
            assert "python3 -m distributed.cli.dask_worker tcp://127.0.0.1:" in script


def test_scheduler_address_from_dask_config(dask_client):
    """Without --scheduler, `DASK_SCHEDULER_ADDRESS` (deploy's client containers set it)
    sends the job to that cluster instead of starting a local one."""
    from ps1dask.execution import cluster_client

    with dask.config.set({"scheduler-address": dask_client.scheduler.address}):
        with cluster_client(None) as client:
            assert client.scheduler.address == dask_client.scheduler.address
            assert client is not dask_client  # a new connection, closed on exit
        assert client.status == "closed"
