"""Embedding throughput through Agentplane beside direct tritonclient calls to the same Triton, in
the same run, and Triton's dynamic batching against none. Prints one JSON document.

    .venv/bin/python bench/bench_inference.py                 # local CPU Triton, about 2 min
    .venv/bin/python bench/bench_inference.py --quick         # smoke run, about 1 min
    .venv/bin/python bench/bench_inference.py --triton-url gpu-host:8001 --gpu   # a GPU Triton

Figures, all in sentences per second (one sentence of about 12 tokens per text):
- "overhead": the `embed` model at `--concurrency` calls in flight, each of `--texts` texts,
  through Agentplane's Embed (auth, validation, quota, metering, tritonclient.grpc.aio) and
  straight to Triton with tritonclient.grpc.aio; overhead = 1 - agentplane / direct
  (target: at most 0.15);
- "dynamic_batching": one text per request at 32 in flight, to `embed` (dynamic batching) and to
  `embed_nobatch` (the same model loaded through the API without it); speedup = batched / not
  (target: at least 3).

Without --triton-url the bench starts Triton from .venv-triton on this machine (CPU), twice:
with every core for the batching phase (the client alone beside it), and pinned to half the
cores for the overhead phase (--pin, the default), the client and Agentplane on the other half,
as if Triton had a machine of its own; without pinning, torch's threads take every core and the
figure measures CPU contention more than Agentplane. "cpu_overhead" (Agentplane's CPU per
sentence over Triton's) is a second view that other load on the host skews less.
With --triton-url the bench uses that Triton as it is, and loads `embed_nobatch` there over the
API (explicit model control).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc.aio as triton_aio
from _common import _TICK, CpuMeter, ServerProcess, host_info, throughput
from tritonclient.grpc import InferInput
from tritonclient.utils import InferenceServerException
from tritonproc import MODEL_REPOSITORY, TritonProcess

from agentplane.inference.v1 import inference_service_pb2 as pb
from agentplane.inference.v1 import inference_service_pb2_grpc as rpc
from agentplane_server.inference.repository import validate

SENTENCES = [
    f"Sentence {i}: the {w} agent answered the customer's question about {t}."
    for i, (w, t) in enumerate(
        (w, t)
        for w in ("support", "billing", "routing", "search")
        for t in ("refunds", "shipping", "passwords", "invoices", "latency", "quotas")
    )
]


class GroupCpuMeter(CpuMeter):
    """CPU seconds of a whole process group: tritonserver and its Python-backend stubs (where
    the model runs), which CpuMeter's one process would miss."""

    def process_seconds(self) -> float:
        if self.pid is None:
            return 0.0
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.pid:  # process group id
                total += int(fields[11]) + int(fields[12])
        return total / _TICK


def pin_threads(pid: int, cores: set[int]) -> None:
    """Every thread of a running process (affinity is per thread) onto `cores`."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cores)


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


async def load_unbatched(client: triton_aio.InferenceServerClient) -> None:
    """`embed_nobatch`: embed's files and configuration, without dynamic batching."""
    (model,), problems = validate(MODEL_REPOSITORY, ["embed"])
    assert not problems, problems
    config = model.config
    config.name = "embed_nobatch"
    config.ClearField("dynamic_batching")
    await client.load_model("embed_nobatch", config=model.config_json(), files=model.files())


def triton_call(client: triton_aio.InferenceServerClient, model: str, texts_per_call: int):  # type: ignore[no-untyped-def]
    async def call(i: int) -> object:
        texts = [SENTENCES[(i + k) % len(SENTENCES)].encode() for k in range(texts_per_call)]
        tensor = InferInput("TEXT", [texts_per_call, 1], "BYTES")
        tensor.set_data_from_numpy(np.array(texts, dtype=np.object_).reshape(-1, 1))
        return await client.infer(model, [tensor])

    return call


def agentplane_call(stub: rpc.InferenceServiceStub, metadata: tuple, texts_per_call: int):  # type: ignore[no-untyped-def]
    async def call(i: int) -> object:
        texts = [SENTENCES[(i + k) % len(SENTENCES)] for k in range(texts_per_call)]
        return await stub.Embed(pb.EmbedRequest(texts=texts), metadata=metadata)

    return call


def sentences(result: dict, texts_per_call: int) -> dict:
    result = dict(result)
    result["sentences_per_s"] = round(result["calls_per_s"] * texts_per_call, 1)
    return result


async def batching_phase(triton_url: str, triton_pid: int | None, seconds: float) -> dict:
    """Dynamic batching against none: one text per request, 32 in flight, client alone."""
    client = triton_aio.InferenceServerClient(triton_url)
    try:
        with contextlib.suppress(InferenceServerException):
            await client.unload_model("embed_nobatch")
        await load_unbatched(client)
        cpu = GroupCpuMeter(triton_pid)
        await throughput(triton_call(client, "embed", 1), 32, 3.0, cpu)  # warm-up
        batched = sentences(await throughput(triton_call(client, "embed", 1), 32, seconds, cpu), 1)
        await throughput(triton_call(client, "embed_nobatch", 1), 32, 2.0, cpu)  # warm-up
        unbatched = sentences(
            await throughput(triton_call(client, "embed_nobatch", 1), 32, seconds, cpu), 1
        )
        with contextlib.suppress(InferenceServerException):
            await client.unload_model("embed_nobatch")
    finally:
        await client.close()
    return {
        "concurrency": 32,
        "texts_per_call": 1,
        "batched": batched,
        "unbatched": unbatched,
        "speedup": ratio(batched["sentences_per_s"], unbatched["sentences_per_s"]),
    }


async def overhead_phase(
    args: argparse.Namespace,
    triton_url: str,
    triton_pid: int | None,
    client_cores: set[int] | None,
    seconds: float,
) -> dict:
    """The same load straight to Triton and through Agentplane, alternated in rounds so that
    drift (other load on the host) affects both sides alike; medians compared."""
    server = ServerProcess(None, extra_args=("--triton-url", triton_url, "--no-access-log"))
    if client_cores:
        pin_threads(server.process.pid, client_cores)
    client = triton_aio.InferenceServerClient(triton_url)
    n = args.texts
    try:
        metadata = server.metadata()
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = rpc.InferenceServiceStub(channel)
            await stub.Embed(pb.EmbedRequest(texts=SENTENCES[:4]), metadata=metadata)
            triton_cpu, server_cpu = GroupCpuMeter(triton_pid), CpuMeter(server.process.pid)
            # Warm up: the first batches of each shape are slower (allocation, kernel choice).
            await throughput(triton_call(client, "embed", n), args.concurrency, 3.0, triton_cpu)
            runs: dict[str, list[dict]] = {"direct": [], "agentplane": []}
            for _ in range(args.rounds or (1 if args.quick else 3)):
                direct_run = await throughput(
                    triton_call(client, "embed", n), args.concurrency, seconds, triton_cpu
                )
                runs["direct"].append(sentences(direct_run, n))
                through_run = await throughput(
                    agentplane_call(stub, metadata, n), args.concurrency, seconds, server_cpu
                )
                runs["agentplane"].append(sentences(through_run, n))
    finally:
        await client.close()
        server.stop()
    direct = statistics.median(r["sentences_per_s"] for r in runs["direct"])
    through = statistics.median(r["sentences_per_s"] for r in runs["agentplane"])
    # The same comparison in CPU time, which other load on the host skews less: what
    # Agentplane's process spends per sentence against what Triton (server and model stubs)
    # spends per sentence.
    agentplane_cpu = statistics.median(r["server_cpu_us_per_call"] for r in runs["agentplane"])
    triton_cpu_per_call = statistics.median(r["server_cpu_us_per_call"] for r in runs["direct"])
    return {
        "concurrency": args.concurrency,
        "texts_per_call": n,
        "direct_tritonclient": runs["direct"],
        "through_agentplane": runs["agentplane"],
        "direct_sentences_per_s_median": direct,
        "agentplane_sentences_per_s_median": through,
        "overhead": round(1 - through / direct, 3) if direct else None,
        "agentplane_cpu_us_per_sentence": round(agentplane_cpu / n, 1),
        "triton_cpu_us_per_sentence": round(triton_cpu_per_call / n, 1) if triton_pid else None,
        "cpu_overhead": ratio(agentplane_cpu, triton_cpu_per_call) if triton_pid else None,
        "note": "server_cpu_us_per_call is Agentplane's process in the agentplane runs and "
        "Triton's process group (server and model stubs) in the direct runs; cpu_overhead = "
        "Agentplane CPU / Triton CPU per sentence (local Triton only)",
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument("--triton-url", help="use this Triton (host:port) instead of starting one")
    parser.add_argument("--gpu", action="store_true", help="label the run as a GPU configuration")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight (overhead)")
    parser.add_argument("--texts", type=int, default=1, help="texts per call (overhead)")
    parser.add_argument("--seconds", type=float, default=None, help="measuring window per phase")
    parser.add_argument("--rounds", type=int, default=0, help="direct/agentplane rounds")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="overhead phase: a local Triton on half the cores, client and Agentplane on the rest",
    )
    args = parser.parse_args()
    seconds = args.seconds or (4.0 if args.quick else 10.0)
    began = time.monotonic()
    report: dict = {
        "bench": "inference",
        "mode": "quick" if args.quick else "full",
        "configuration": "gpu" if args.gpu else ("external" if args.triton_url else "cpu"),
        "host": host_info(),
        "model": "embed (all-MiniLM-L6-v2)",
        "targets": {"max_overhead": 0.15, "min_batching_speedup": 3.0},
    }
    if args.triton_url:
        report["dynamic_batching"] = await batching_phase(args.triton_url, None, seconds)
        report["overhead"] = await overhead_phase(args, args.triton_url, None, None, seconds)
        report["pinning"] = None
    else:
        # Batching: Triton with every core, as it would run alone.
        triton = TritonProcess(load_models=("embed",))
        try:
            pid = triton.process.pid if triton.process else None
            report["dynamic_batching"] = await batching_phase(triton.grpc_url, pid, seconds)
        finally:
            triton.kill()
        # Overhead: on a shared host the model's threads would take every core and Agentplane
        # would wait for CPU between a response and the next request (contention, not the
        # overhead asked about). --pin gives Triton its own cores, as its own machine would;
        # the client and Agentplane (or the client alone, direct) share the others.
        cores = sorted(os.sched_getaffinity(0))
        pin = args.pin and len(cores) >= 2
        triton_cores = set(cores[len(cores) // 2 :]) if pin else None
        client_cores = set(cores[: len(cores) // 2]) if pin else None
        report["pinning"] = (
            {
                "triton": sorted(triton_cores or ()),
                "client_and_agentplane": sorted(client_cores or ()),
            }
            if pin
            else None
        )
        triton = TritonProcess(load_models=("embed",), cpus=triton_cores)
        try:
            if client_cores:
                os.sched_setaffinity(0, client_cores)
            pid = triton.process.pid if triton.process else None
            report["overhead"] = await overhead_phase(
                args, triton.grpc_url, pid, client_cores, seconds
            )
        finally:
            triton.kill()
    report["targets_met"] = {
        "overhead": report["overhead"]["overhead"] is not None
        and report["overhead"]["overhead"] <= 0.15,
        "batching": report["dynamic_batching"]["speedup"] >= 3.0,
    }
    report["wall_seconds"] = round(time.monotonic() - began, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
