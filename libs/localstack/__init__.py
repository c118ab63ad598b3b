"""Real servers on this machine for tests, benchmarks and `potluck up`.

Each class starts one real server process on loopback (never a fake), knows
its own PID, and stops only what it started. A URL in the environment
(``POTLUCK_NATS_URL``, ``POTLUCK_DATABASE_URL``, ``DOCKER_HOST``) points at a
server someone else runs instead.
"""

from potluck.localstack.docker_engine import DockerEngine, ensure_docker_installed
from potluck.localstack.errors import LocalStackError
from potluck.localstack.nats_server import NatsCluster, NatsServer
from potluck.localstack.ports import free_port, wait_for_port
from potluck.localstack.postgres_server import PostgresServer
from potluck.localstack.test_image import build_test_image

__all__ = [
    "DockerEngine",
    "LocalStackError",
    "NatsCluster",
    "NatsServer",
    "PostgresServer",
    "build_test_image",
    "ensure_docker_installed",
    "free_port",
    "wait_for_port",
]
