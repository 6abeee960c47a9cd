"""A real server on loopback (uvicorn in a thread) over the bundled model, with a loopback test cloud."""

from __future__ import annotations


import httpx
import pytest

from edge_runtime.caps import LoadSettings
from benchmarks.served import free_port, running  # noqa: F401 - re-exported for the tests
from edge_runtime.runtime import Runtime


@pytest.fixture(scope="session")
def batched_runtime(bundled_path):
    with Runtime.load(bundled_path, settings=LoadSettings(n_parallel=4, n_ctx=1024)) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def cloud():
    from benchmarks.loopback_cloud import LoopbackCloud

    with LoopbackCloud(answer_fn=lambda body: "Cloud says Paris.") as test_cloud:
        yield test_cloud


def make_server(runtime, *, cloud=None, threshold=0.0, api_key=None, max_in_flight=16, max_body_bytes=200_000,
                ledger_path=None, early_floor=None):
    """(EdgeServer, app) from the production builder over the shared ``runtime``."""
    from edge_runtime.server.build import build_server
    from edge_runtime.server.settings import ServerSettings

    settings = ServerSettings(cloud=_cloud_gateway(cloud) if cloud is not None else None,
                              confidence_threshold=threshold, early_floor=early_floor, api_key=api_key,
                              max_in_flight=max_in_flight, max_body_bytes=max_body_bytes,
                              ledger=ledger_path is not None, ledger_path=ledger_path)
    app, server = build_server(settings, runtime=runtime)
    return server, app


def _cloud_gateway(cloud):
    from fallback.providers import GatewayConfig, ProviderConfig

    provider = ProviderConfig(name="loopback", base_url=cloud.base_url, model="loopback-1", timeout_s=5,
                              max_retries=1, price_input_per_mtok=2.5, price_output_per_mtok=10.0)
    # generous: the overall deadline counts the local turn, which a busy machine can slow to seconds
    return GatewayConfig(providers=[provider], overall_deadline_s=30, escalation_budget_s=30, backoff_base_s=0.01)


@pytest.fixture(scope="session")
def local_server(batched_runtime):
    server, app = make_server(batched_runtime)
    with running(app) as url:
        yield server, url


@pytest.fixture(scope="session")
def cloud_server(batched_runtime, cloud, tmp_path_factory):
    ledger_path = tmp_path_factory.mktemp("ledger") / "ledger.sqlite3"
    server, app = make_server(batched_runtime, cloud=cloud, threshold=0.5, ledger_path=ledger_path)
    with running(app) as url:
        yield server, url


@pytest.fixture()
def client(local_server):
    from openai import OpenAI

    return OpenAI(base_url=local_server[1] + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture()
def raw(local_server):
    with httpx.Client(base_url=local_server[1], timeout=120) as http:
        yield http
