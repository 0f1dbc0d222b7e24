"""diffuserve as a Ray Serve application: one HTTP ingress, one deployment per model.

- :class:`ModelServer` is one model's replica: the in-process engine
  (:class:`~diffuserve.engine.local.engine.LocalEngine`) holding that model alone. It
  loads the model before Ray routes anything to it.
- :class:`Ingress` is the same FastAPI application as ``diffuserve serve``
  (:func:`~diffuserve.app.build_app`), built on each ingress replica with a
  :class:`~diffuserve.deploy.ray_engine.RayEngine` that reaches the models through
  deployment handles.

**Who batches.** The replica's own scheduler, not ``@serve.batch``: it alone knows which
tasks can share a pipeline call (size, steps, guidance, kind), packs them fairly
between clients, halves a batch that runs out of memory and stops cancelled work at the
next step. Ray's part is to spread tasks over replicas and to hold a bounded queue in
front of them: each replica takes ``max_ongoing_requests`` tasks at once (by default
twice its batch, so the next batch is waiting when one ends), and past
``max_queued_requests`` (``--max-queue``) the handle refuses with back-pressure, which
the ingress answers with 429 and ``Retry-After``.

:func:`build_application` makes the application from settings (``serve --ray``);
:func:`app_builder` makes it from a Serve config file's ``args`` (``serve deploy``,
KubeRay), which :func:`serve_config` writes.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI
from pydantic import SecretStr
from ray import serve
from ray.serve.handle import DeploymentHandle

from diffuserve.config import ModelSpec, Settings
from diffuserve.config.keys import HASH_PREFIX, KeyEntry, hash_key, key_entries
from diffuserve.deploy.ray_engine import RayEngine
from diffuserve.engine.local.engine import LocalEngine
from diffuserve.engine.plugins import create_backends
from diffuserve.engine.types import ModelStatus, Task, TaskEvent
from diffuserve.storage.signing import load_or_create_secret

logger = logging.getLogger("diffuserve.deploy")

#: The Serve application's name on the cluster.
APP_NAME = "diffuserve"
INGRESS_NAME = "ingress"
#: The Serve config's import path of :func:`app_builder`.
IMPORT_PATH = "diffuserve.deploy.ray_serve:app_builder"
#: Settings never written into a Serve config file: each replica reads them from its
#: environment (``DIFFUSERVE_API_KEYS``, ``DIFFUSERVE_SIGNING_SECRET``…), or they are
#: about this command rather than the application.
NOT_IN_CONFIG = frozenset({"api_keys", "signing_secret", "model", "models_file", "ray",
                           "host", "port"})


class ModelServer:
    """One replica of one model: its engine, loaded before Ray routes work to it.

    **Adapters.** A task with LoRA adapters comes with its set's id as Ray's multiplexed
    model id (:func:`~diffuserve.deploy.ray_engine.adapter_set_id`). The replica passes
    it through a ``@serve.multiplexed`` loader, so Ray knows which sets each replica
    drew with lately (at most ``max_loaded_adapters``, least recently used forgotten
    first) and sends a set's tasks preferably to a replica that has it. The loader only
    records the set; the engine loads the adapters when a batch of that set is drawn.
    Loading them ahead would save nothing: peft puts its layers into modules that
    running calls use, so any load waits until no call uses the weights (the engine's
    gate, which the task's own batch passes moments later), and Ray runs a replica's
    loaders one at a time, before their requests are queued, so a loader waiting for a
    batch to end would hold back every other new set on that replica.
    """

    def __init__(self, settings: Settings, model: str) -> None:
        spec = next(spec for spec in settings.models if spec.name == model)
        capacity = max_ongoing_requests(spec)
        # The replica's queue holds what Ray lets in; Ray's own queue holds the rest.
        self.engine = LocalEngine([spec], create_backends((spec,)), max_queue=capacity,
                                  batching=settings.batching)
        self.engine.load_all()

        async def note_adapter_set(set_id: str) -> str:
            return set_id  # the engine's LRU loads the adapters (see above)

        # Made here for the model's bound (Ray keeps its cache on the function object).
        self._note_adapter_set = serve.multiplexed(
            max_num_models_per_replica=spec.max_loaded_adapters)(note_adapter_set)

    async def stream(self, task: Task) -> AsyncIterator[TaskEvent]:
        set_id = serve.get_multiplexed_model_id()
        if set_id:
            await self._note_adapter_set(set_id)
        async for event in self.engine.stream(task):
            yield event

    async def status(self) -> list[ModelStatus]:
        return await self.engine.models()

    async def __del__(self) -> None:
        # Ray waits for ongoing requests (up to graceful_shutdown_timeout_s) first.
        await self.engine.stop()


class Ingress:
    """The HTTP application, built on the replica with handles to every model."""

    def __init__(self, settings: Settings, handles: dict[str, DeploymentHandle[Any]],
                 keys: list[KeyEntry] | None = None) -> None:
        self.settings = settings
        self.handles = handles
        self.keys = keys

    def __serve_build_asgi_app__(self) -> FastAPI:
        from diffuserve.app import build_app

        engine = RayEngine(self.handles, max_queued=self.settings.max_queue)
        return build_app(self.settings, engine=engine,
                         keys=self.keys)


ModelDeployment = serve.deployment(name="model")(ModelServer)
IngressDeployment = serve.deployment(name=INGRESS_NAME)(serve.ingress()(Ingress))


def max_ongoing_requests(spec: ModelSpec) -> int:
    return spec.ray.max_ongoing_requests or 2 * spec.batch_images


def deployment_name(spec: ModelSpec, taken: set[str]) -> str:
    """A Serve deployment name for the model (Serve names allow fewer characters)."""
    base = "model-" + re.sub(r"[^A-Za-z0-9_-]+", "-", spec.name).strip("-")
    name, suffix = base, 2
    while name in taken:
        name, suffix = f"{base}-{suffix}", suffix + 1
    taken.add(name)
    return name


def model_options(spec: ModelSpec, settings: Settings) -> dict[str, Any]:
    """The deployment options of one model (also written into Serve config files)."""
    ray = spec.ray
    num_gpus = ray.num_gpus if ray.num_gpus is not None else (
        1.0 if spec.device == "cuda" else 0.0)
    options: dict[str, Any] = {
        "max_ongoing_requests": max_ongoing_requests(spec),
        "max_queued_requests": settings.max_queue,
        "ray_actor_options": {"num_cpus": ray.num_cpus, "num_gpus": num_gpus},
        "graceful_shutdown_timeout_s": settings.shutdown_timeout_seconds,
    }
    if ray.max_replicas is not None:
        options["autoscaling_config"] = {
            "min_replicas": ray.min_replicas if ray.min_replicas is not None else 1,
            "initial_replicas": settings.replicas or ray.replicas,
            "max_replicas": ray.max_replicas,
            # A replica is busy enough with one batch running and the next one waiting.
            "target_ongoing_requests": spec.batch_images,
        }
    else:
        options["num_replicas"] = settings.replicas or ray.replicas
    return options


def ingress_options(settings: Settings) -> dict[str, Any]:
    return {
        "num_replicas": settings.ingress_replicas,
        # Encoding images is the ingress's only real work; the models hold the CPUs.
        "ray_actor_options": {"num_cpus": 0},
        # Requests wait in the models' queues, not in front of the ingress.
        "max_ongoing_requests": 10_000,
        "graceful_shutdown_timeout_s": settings.shutdown_timeout_seconds,
    }


def check_shared_state(settings: Settings) -> str | None:
    """Why these settings cannot run on several ingress replicas, or None."""
    if settings.ingress_replicas < 2:
        return None
    if settings.storage_url is None and settings.signing_secret is None:
        return ("several ingress replicas need one store for url images: --storage-url "
                "s3://BUCKET, or one storage dir shared by all of them and the same "
                "DIFFUSERVE_SIGNING_SECRET for each")
    limited = settings.rate_limit_rpm or settings.rate_limit_ipm or settings.api_keys_file
    if limited and not settings.rate_limit_storage.startswith(("redis", "rediss")):
        return ("several ingress replicas need shared rate limits: --rate-limit-storage "
                "redis://HOST:PORT/DB (each replica would otherwise grant a key its whole "
                "limit)")
    return None


def for_the_cluster(settings: Settings) -> tuple[Settings, list[KeyEntry]]:
    """Settings whose secrets are resolved where the command runs, not on a replica's
    disk: the keys as digests (the keys file read here, no raw key sent to the
    cluster), and for local storage one signing secret for every ingress replica."""
    keys = [KeyEntry(HASH_PREFIX + hash_key(entry.key).hex(), entry.name, entry.limits,
                     entry.role)
            if not entry.key.startswith(HASH_PREFIX) else entry
            for entry in key_entries(settings)]
    update: dict[str, Any] = {"api_keys": (), "api_keys_file": None}
    if settings.storage_url is None and settings.signing_secret is None:
        secret = load_or_create_secret(settings.storage_dir).decode()
        update["signing_secret"] = SecretStr(secret)
    return settings.model_copy(update=update), keys


def build_application(settings: Settings,
                      keys: list[KeyEntry] | None = None) -> serve.Application:
    """The ingress bound to one deployment per configured model; ``keys`` replace the
    configured keys on the ingress replicas (see :func:`for_the_cluster`)."""
    problem = check_shared_state(settings)
    if problem is not None:
        raise ValueError(problem)
    taken: set[str] = {INGRESS_NAME}
    models: dict[str, Any] = {}
    for spec in settings.engine_models:
        deployment = ModelDeployment.options(name=deployment_name(spec, taken),
                                             **model_options(spec, settings))
        models[spec.name] = deployment.bind(settings, spec.name)
    application: serve.Application = IngressDeployment.options(
        **ingress_options(settings)).bind(settings, models, keys)
    return application


def config_args(settings: Settings) -> dict[str, Any]:
    """The settings a Serve config carries (JSON), without secrets or defaults."""
    leave_out = set(NOT_IN_CONFIG)
    if urlsplit(settings.rate_limit_storage).password:
        leave_out.add("rate_limit_storage")  # DIFFUSERVE_RATE_LIMIT_STORAGE on the replicas
    args = settings.model_dump(mode="json", exclude=leave_out, exclude_defaults=True)
    args["models"] = [spec.model_dump(mode="json", exclude_defaults=True)
                      for spec in settings.models]
    return args


def app_builder(args: dict[str, Any]) -> serve.Application:
    """``import_path`` of Serve config files: the application from their ``args``; every
    setting left out (secrets above all) comes from the replica's ``DIFFUSERVE_*``
    environment."""
    return build_application(Settings(**args))


def serve_config(settings: Settings) -> dict[str, Any]:
    """A Serve config (``serve deploy``, a KubeRay RayService's ``serveConfigV2``)."""
    taken: set[str] = {INGRESS_NAME}
    deployments = [{"name": INGRESS_NAME, **ingress_options(settings)}]
    for spec in settings.engine_models:
        deployments.append({"name": deployment_name(spec, taken),
                            **model_options(spec, settings)})
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": settings.host, "port": settings.port},
        "applications": [{
            "name": APP_NAME,
            "route_prefix": "/",
            "import_path": IMPORT_PATH,
            "args": config_args(settings),
            "deployments": deployments,
        }],
    }


class DeployFailed(Exception):
    """The application did not come up on the cluster (a model failed to load…)."""


#: The first lines of a written Serve config.
CONFIG_HEADER = """\
# Ray Serve config of diffuserve, written by `diffuserve ray-config`.
# Deploy: serve deploy THIS_FILE (or paste `applications` into a KubeRay RayService's
# serveConfigV2). Secrets are not in this file: give every node the DIFFUSERVE_*
# variables (DIFFUSERVE_API_KEYS, DIFFUSERVE_SIGNING_SECRET, AWS_* for S3 storage).
"""


def serving_address(settings: Settings) -> str:
    """Where Serve's proxies listen. Serve keeps the address it started with: on a
    cluster where it already runs, --host and --port cannot move it."""
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    if client is None:  # not started: nothing listens yet
        return f"http://{settings.host}:{settings.port}"
    http = client.http_config
    if (http.host, http.port) != (settings.host, settings.port):
        logger.warning("Serve already runs on this cluster at another address; the "
                       "application is served there", extra={"fields": {
                           "host": http.host, "port": http.port}})
    return f"http://{http.host}:{http.port}"


def run(settings: Settings, *, ready: Callable[[str], None]) -> None:
    """``serve --ray``: deploy on the cluster named by ``RAY_ADDRESS`` (a new local Ray
    instance when unset), call ``ready`` with the address, and serve until SIGTERM or
    SIGINT; then take the application down (and the local instance with it)."""
    import ray

    address = os.environ.get("RAY_ADDRESS") or None
    problem = check_shared_state(settings)
    if problem is not None:
        raise ValueError(problem)
    application = build_application(*for_the_cluster(settings))
    if address is None:
        ray.init(address="local", include_dashboard=False)
    else:
        ray.init(address=address)
    # After ray.init, which installs handlers of its own that would end the process
    # before the application is taken down.
    stop = threading.Event()
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda signum, frame: stop.set())
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        url = serving_address(settings)
        try:
            serve.run(application, name=APP_NAME, route_prefix="/")
        except RuntimeError as exc:  # Serve's word for a deployment that never came up
            raise DeployFailed(f"the application did not start on Ray: {exc}") from exc
        ready(url)
        stop.wait()
        serve.delete(APP_NAME)
    finally:
        if address is None:
            serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
