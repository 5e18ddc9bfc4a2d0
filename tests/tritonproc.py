"""A real Triton Inference Server for the tests, the benchmarks and `make triton`.

The `tritonserver` binary and its Python backend come from the nvidia-pytriton wheel installed
in the Triton environment (.venv-triton, made by `make triton-env`). Two things make it run
outside NVIDIA's container:
- the Python backend needs its stub (`triton_python_backend_stub`) for the environment's Python
  version beside `libtriton_python.so`: the wheel keeps one per version in
  `python_backend_stubs/3.X/`, so a backend folder is assembled once in .venv-triton;
- LD_LIBRARY_PATH lists that Python's sysconfig LIBDIR first (else the stub loads another
  libpython, the one the wheel bundles, and the environment's stdlib fails to import), then
  `nvidia_pytriton.libs`; PATH starts with the environment's bin, which is how the stub's
  embedded interpreter finds the environment's site-packages.

Only the standard library is used here, so any Python can run this file:

    .venv/bin/python tests/tritonproc.py            # Triton on 8000/8001/8002 (`make triton`)
    .venv/bin/python tests/tritonproc.py --model-config-name gpu --load-model embed
    .venv/bin/python tests/tritonproc.py --prepare  # only assemble the backend folder
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRITON_VENV = Path(os.environ.get("AGENTPLANE_TRITON_VENV", ROOT / ".venv-triton"))
MODEL_REPOSITORY = ROOT / "triton-models"
SHM = Path("/dev/shm")
SHM_PATTERN = "triton_python_backend_shm_region_*"

_PROBE = """
import json, sys, sysconfig
from pathlib import Path
import pytriton
package = Path(pytriton.__file__).parent
print(json.dumps({
    "libdir": sysconfig.get_config_var("LIBDIR"),
    "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    "server": str(package / "tritonserver"),
    "libs": str(package.parent / "nvidia_pytriton.libs"),
}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    backend_directory: Path
    env: dict[str, str]


def prepare(venv: Path = TRITON_VENV) -> TritonInstall:
    """Locate tritonserver in `venv` and assemble its backend folder (idempotent)."""
    python = venv / "bin" / "python"
    if not python.exists():
        raise RuntimeError(f"no Triton environment at {venv}: run `make triton-env` first")
    info = json.loads(subprocess.check_output([str(python), "-c", _PROBE], text=True))
    server = Path(info["server"])
    backends = venv / "triton-backends"
    target = backends / "python"
    stub = server / "python_backend_stubs" / info["python"] / "triton_python_backend_stub"
    sources = [*sorted((server / "backends" / "python").glob("*.*")), stub]
    target.mkdir(parents=True, exist_ok=True)
    for source in sources:
        if source.is_file():
            destination = target / source.name
            if not destination.exists() or destination.stat().st_size != source.stat().st_size:
                shutil.copy2(source, destination)
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(
        p for p in (info["libdir"], info["libs"], os.environ.get("LD_LIBRARY_PATH", "")) if p
    )
    env["PATH"] = f"{venv / 'bin'}:{os.environ.get('PATH', '')}"
    env["HF_HUB_OFFLINE"] = "1"  # nothing downloads at run time
    env["TRANSFORMERS_OFFLINE"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    env.pop("PYTHONPATH", None)  # the server's environment must not leak into the stub
    env.pop("VIRTUAL_ENV", None)
    return TritonInstall(server / "bin" / "tritonserver", backends, env)


def server_args(
    install: TritonInstall,
    model_repository: Path,
    grpc_port: int,
    http_port: int,
    metrics_port: int,
    load_models: Sequence[str] = ("*",),
    host: str = "127.0.0.1",
    config_name: str = "",
) -> list[str]:
    args = [
        str(install.binary),
        f"--model-repository={model_repository}",
        f"--backend-directory={install.backend_directory}",
        # Explicit model control: `agentplane models deploy` loads and replaces models through
        # the API; the startup set comes from --load-model.
        "--model-control-mode=explicit",
        f"--grpc-address={host}",
        f"--http-address={host}",
        f"--metrics-address={host}",
        f"--grpc-port={grpc_port}",
        f"--http-port={http_port}",
        f"--metrics-port={metrics_port}",
        "--exit-timeout-secs=5",
        "--log-verbose=0",
    ]
    if config_name:  # e.g. "gpu": models use configs/gpu.pbtxt where they have one
        args.append(f"--model-config-name={config_name}")
    return args + [f"--load-model={name}" for name in load_models]


class TritonProcess:
    """`tritonserver` on free ports (or given ones) in a child process."""

    def __init__(
        self,
        model_repository: Path = MODEL_REPOSITORY,
        *,
        load_models: Sequence[str] = ("*",),
        log_dir: Path | None = None,
        start: bool = True,
        cpus: set[int] | None = None,
    ) -> None:
        self.install = prepare()
        self.model_repository = model_repository
        self.load_models = tuple(load_models)
        self.cpus = cpus  # CPU affinity of the server and its stubs (benchmarks); None: all
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="agentplane-triton-"))
        self.process: subprocess.Popen | None = None
        self._log = None
        self._shm_before: set[Path] = set()
        self.starts = 0
        if start:
            self.start()

    def start(self, timeout: float = 240) -> None:
        """Start (again, on the same ports) and wait until every startup model is ready."""
        self.starts += 1
        self._shm_before = set(SHM.glob(SHM_PATTERN))
        self.log_path = self.log_dir / f"triton-{self.grpc_port}-{self.starts}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            server_args(
                self.install,
                self.model_repository,
                self.grpc_port,
                self.http_port,
                self.metrics_port,
                self.load_models,
            ),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.install.env,
            start_new_session=True,  # the Python backend stubs go with it on a kill
            preexec_fn=(lambda: os.sched_setaffinity(0, self.cpus)) if self.cpus else None,
        )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited early:\n{self.logs()}")
            if self.ready():
                return
            time.sleep(0.2)
        raise TimeoutError(f"tritonserver not ready in {timeout}s:\n{self.logs()}")

    def ready(self) -> bool:
        """Server ready: with Triton's strict readiness, every loaded model is ready."""
        url = f"http://127.0.0.1:{self.http_port}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of Triton's Prometheus metrics (0 when absent)."""
        for line in self.metrics().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                return float(value)
        return 0.0

    def logs(self) -> str:
        if self._log is not None:
            self._log.flush()
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the server and its backend stubs, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            # A killed Python backend leaves its shared-memory regions behind; remove the ones
            # that appeared since this server started (one test Triton starts at a time).
            for region in set(SHM.glob(SHM_PATTERN)) - self._shm_before:
                with contextlib.suppress(OSError):
                    region.unlink()
        self._close_log()

    def stop(self, timeout: float = 30) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@contextlib.contextmanager
def running_triton(**kwargs) -> Iterator[TritonProcess]:  # type: ignore[no-untyped-def]
    triton = TritonProcess(**kwargs)
    try:
        yield triton
    finally:
        triton.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run tritonserver on triton-models/")
    parser.add_argument("--model-repository", type=Path, default=MODEL_REPOSITORY)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument(
        "--load-model", action="append", help="model to load at start (default: all)"
    )
    parser.add_argument(
        "--model-config-name",
        default="",
        help="use each model's configs/NAME.pbtxt where it has one (e.g. gpu)",
    )
    parser.add_argument("--prepare", action="store_true", help="assemble the backend and exit")
    args = parser.parse_args(argv)
    install = prepare()
    if args.prepare:
        print(f"tritonserver: {install.binary}\nbackends: {install.backend_directory}")
        return 0
    command = server_args(
        install,
        args.model_repository.resolve(),
        args.grpc_port,
        args.http_port,
        args.metrics_port,
        args.load_model or ("*",),
        args.host,
        args.model_config_name,
    )
    print(" ".join(command), flush=True)
    os.execve(command[0], command, install.env)  # Ctrl-C and signals go straight to Triton
    return 0


if __name__ == "__main__":
    sys.exit(main())
