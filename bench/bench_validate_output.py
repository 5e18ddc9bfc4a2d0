"""ValidateOutput on 1 MiB of hostile content, and what it does to another project's calls.

One server on SQLite. For each detector, 1 MiB of content made of its worst cases (all hits, or
near-misses that make a pattern work hardest) is validated with that detector alone; the
figure is the median of a few calls. Then project B's CheckPermission latency is measured
twice in the same run: with nothing else running (the baseline), and while project A sends
these 1 MiB ValidateOutput calls back to back. Prints one JSON document.

    .venv/bin/python bench/bench_validate_output.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time

import grpc
from _common import CpuMeter, ServerProcess, host_info, latency
from test_governance_helpers import Project

from agentplane.governance.v1 import decision_pb2 as D
from agentplane.governance.v1 import governance_service_pb2 as pb
from agentplane.governance.v1 import governance_service_pb2_grpc as rpc

MIB = 1 << 20
WORST = {
    "DETECTOR_EMAIL": ["a@b.cc ", "a.a.a.a.a@", "x@"],
    "DETECTOR_PHONE": ["2015550123 ", "+1 201 555 0123, ", "1", "12-34 "],
    "DETECTOR_CARD_NUMBER": ["4111111111111111 ", "4111111111111112 ", "4 "],
    "DETECTOR_SECRET": [
        "eyJaaaaaaaa.",
        "eyJaaaaa-",
        "a@b.cc ",
        "password = aaaaaaaaaaaaaaaa ",
        "aws secret ",
        "-----BEGIN A ",
    ],
}


def fill(unit: str) -> str:
    return (unit * (MIB // len(unit) + 1))[:MIB]


def validate(
    project: Project, content: str, checks: list[int]
) -> tuple[float, pb.ValidateOutputResponse]:
    start = time.perf_counter()
    reply = project.gov.ValidateOutput(
        pb.ValidateOutputRequest(agent_id="billing", content=content, checks=checks),
        metadata=project.md,
        timeout=600,
    )
    return time.perf_counter() - start, reply


def per_detector(project: Project, repeats: int) -> list[dict[str, object]]:
    # The first large call starts the server's detector process; reported apart.
    took, _ = validate(project, fill("warm up "), [D.DETECTOR_EMAIL])
    rows: list[dict[str, object]] = [
        {"detector": "first large call (starts the detector process)", "median_s": round(took, 3)}
    ]
    for name, units in WORST.items():
        for unit in units:
            content = fill(unit)
            seconds, reply = [], None
            for _ in range(repeats):
                took, reply = validate(project, content, [D.Detector.Value(name)])
                seconds.append(took)
            assert reply is not None
            rows.append(
                {
                    "detector": name,
                    "content": f"{unit!r} repeated to 1 MiB",
                    "median_s": round(statistics.median(seconds), 3),
                    "max_s": round(max(seconds), 3),
                    "findings": len(reply.findings),
                    "findings_truncated": reply.findings_truncated,
                }
            )
    all_checks = fill("a@b.cc 4111111111111111 2015550123 eyJaaaaaaaa.eyJaaaaaaaa.eyJaaaaaaaa ")
    took, reply = validate(project, all_checks, [])
    rows.append(
        {
            "detector": "all (checks empty)",
            "content": "e-mail, card, phone and JWT hits mixed, 1 MiB",
            "median_s": round(took, 3),
            "max_s": round(took, 3),
            "findings": len(reply.findings),
            "findings_truncated": reply.findings_truncated,
        }
    )
    return rows


async def other_project_latency(server: ServerProcess, project: Project, calls: int) -> dict:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = rpc.GovernanceServiceStub(channel)
        request = pb.CheckPermissionRequest(agent_id="billing", action="tool:db.query")

        async def call(_: int) -> object:
            return await stub.CheckPermission(request, metadata=project.md, timeout=60)

        return await latency(call, calls, warmup=20, cpu=CpuMeter(server.process.pid))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and calls")
    args = parser.parse_args()
    repeats, calls = (1, 200) if args.quick else (3, 1000)
    server = ServerProcess(None)
    try:
        a, b = Project(server), Project(server)
        a.policy("allow-db", 1, actions=["tool:db.*"])
        b.policy("allow-db", 1, actions=["tool:db.*"])
        detectors = per_detector(a, repeats)
        quiet = asyncio.run(other_project_latency(server, b, calls))

        stop = threading.Event()
        loaded_calls = [0]

        def load() -> None:
            contents = [(fill(u), [D.Detector.Value(n)]) for n, us in WORST.items() for u in us]
            while not stop.is_set():
                for content, checks in contents:
                    if stop.is_set():
                        break
                    validate(a, content, checks)
                    loaded_calls[0] += 1

        loader = threading.Thread(target=load)
        loader.start()
        time.sleep(1.0)  # the first large call is in flight
        loaded = asyncio.run(other_project_latency(server, b, calls))
        stop.set()
        loader.join()
    finally:
        server.stop()
    print(
        json.dumps(
            {
                "bench": "validate_output",
                "content_bytes": MIB,
                "per_detector": detectors,
                "other_project_check_permission": {
                    "baseline_no_load": quiet,
                    "while_project_a_validates_1mib": {
                        **loaded,
                        "project_a_validate_calls_meanwhile": loaded_calls[0],
                    },
                },
                "host": host_info(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
