"""ValidateOutput on hostile content: bounded findings (findings_truncated), overlap removal that
matches the simple definition, and a large call that leaves another project's calls served.
The server tests run on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import grpc
from hypothesis import given, settings
from hypothesis import strategies as st
from test_governance_helpers import Project

from agentplane.governance.v1 import decision_pb2 as D
from agentplane.governance.v1 import governance_service_pb2 as pb
from agentplane_server.governance import detectors

MIB = 1 << 20
# Content that is nothing but hits (or near-hits) for one detector, 1 MiB of it.
WORST = {
    D.DETECTOR_EMAIL: "a@b.cc ",
    D.DETECTOR_PHONE: "2015550123 ",
    D.DETECTOR_CARD_NUMBER: "4111111111111111 ",
    D.DETECTOR_SECRET: "eyJaaaaaaaa.",
}


def fill(unit: str, size: int = MIB) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def naive_without_overlaps(hits: list[detectors.Hit]) -> list[detectors.Hit]:
    """The definition: in (severity descending, start, longest first) order, keep a hit unless
    it overlaps one kept before it."""
    kept: list[detectors.Hit] = []
    for hit in sorted(hits, key=lambda h: (-h.severity, h.start, h.start - h.end)):
        if all(hit.end <= k.start or hit.start >= k.end for k in kept):
            kept.append(hit)
    return sorted(kept, key=lambda h: h.start)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 60), st.integers(1, 12), st.sampled_from([2, 3, 4]), st.integers(0, 3)
        ),
        max_size=40,
    )
)
def test_overlap_removal_matches_the_definition(spans) -> None:  # type: ignore[no-untyped-def]
    hits = [
        detectors.Hit(1, f"d{tag}", severity, start, start + length, "")
        for start, length, severity, tag in spans
    ]
    got = detectors.without_overlaps(hits)
    want = naive_without_overlaps(hits)
    assert [(h.start, h.end, h.severity) for h in got] == [
        (h.start, h.end, h.severity) for h in want
    ]


def test_findings_are_capped_and_the_rest_is_masked() -> None:
    for detector, unit in WORST.items():
        text = fill(unit)
        scan = detectors.run(text, [detector])
        limit = detectors.PHONE_MAX_HITS if detector == D.DETECTOR_PHONE else detectors.MAX_FINDINGS
        assert scan.truncated and len(scan.hits) == limit, D.Detector.Name(detector)
        assert scan.unreported_from == scan.hits[-1].end
        redacted = detectors.redact(
            text, [(h.start, h.end) for h in scan.hits], masked_from=scan.unreported_from
        )
        assert len(redacted) == len(text) and set(redacted[scan.unreported_from :]) == {"*"}
    # Phone matching gives up after PHONE_MAX_TRIES digit runs that are not numbers: the rest
    # counts as not scanned.
    digits = detectors.run("call 2015550123 then " + fill("1 ", MIB // 4), [D.DETECTOR_PHONE])
    assert digits.truncated and [h.start for h in digits.hits] == [5]
    assert digits.unreported_from == 15
    few = "mail a@b.cc and c@d.ee, card 4111 1111 1111 1111"
    scan = detectors.run(few, [D.DETECTOR_EMAIL, D.DETECTOR_CARD_NUMBER], limit=2)
    assert scan.truncated and [h.name for h in scan.hits] == ["email", "email"]
    assert (
        detectors.run(few, [D.DETECTOR_EMAIL, D.DETECTOR_CARD_NUMBER], limit=3).truncated is False
    )


def test_secret_patterns_do_not_rescan_runs() -> None:
    # "eyJ" starting each of many runs with no "." after them: a backtracking engine rescans
    # the rest of the run from every "eyJ" (quadratic); RE2 reads it once. Also the hits that
    # need a boundary or a "not followed by" still work without lookarounds.
    assert detectors.run(fill("eyJaaaaa-", 256 * 1024), [D.DETECTOR_SECRET]).hits == []
    key = "AIza" + "b" * 35
    text = f"{key} {key} x{key}"
    hits = detectors.run(text, [D.DETECTOR_SECRET]).hits
    assert [(h.name, text[h.start : h.end]) for h in hits] == [("google_api_key", key)] * 2


def test_byte_offsets_in_one_pass() -> None:
    text = "é" * 1000 + "x" + "ü" * 10
    offsets = detectors.byte_offsets(text, [0, 1000, 1001, 1011, 500])
    assert offsets == {0: 0, 500: 1000, 1000: 2000, 1001: 2001, 1011: 2021}


def test_large_validate_output_is_truncated_and_others_are_served(server) -> None:  # type: ignore[no-untyped-def]
    a, b = Project(server), Project(server)
    results: dict[int, pb.ValidateOutputResponse] = {}
    errors: list[BaseException] = []

    def validate_all() -> None:
        try:
            for detector, unit in WORST.items():
                # A bounded wait, not a speed claim: the quadratic overlap removal took hours
                # on this content.
                results[detector] = a.gov.ValidateOutput(
                    pb.ValidateOutputRequest(
                        agent_id="billing", content=fill(unit), checks=[detector]
                    ),
                    metadata=a.md,
                    timeout=120,
                )
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    worker = threading.Thread(target=validate_all)
    worker.start()
    served = 0
    while worker.is_alive():
        # Another project's calls keep being answered while the large calls run.
        reply = b.gov.CheckPermission(
            pb.CheckPermissionRequest(agent_id="billing", action="tool:db.query"),
            metadata=b.md,
            timeout=30,
        )
        assert reply.decision_id
        served += 1
    worker.join()
    assert not errors, errors
    assert served >= 1
    for detector, reply in results.items():
        limit = detectors.PHONE_MAX_HITS if detector == D.DETECTOR_PHONE else detectors.MAX_FINDINGS
        assert reply.findings_truncated and len(reply.findings) == limit
        assert {f.detector for f in reply.findings} == {detector}
        tail = reply.redacted_content[reply.findings[-1].end_offset :]
        assert tail and set(tail) == {"*"}
    assert results[D.DETECTOR_SECRET].verdict == D.VERDICT_REJECT
    assert results[D.DETECTOR_CARD_NUMBER].verdict == D.VERDICT_FLAG_FOR_REVIEW
    assert results[D.DETECTOR_EMAIL].verdict == D.VERDICT_ACCEPT

    small = a.gov.ValidateOutput(
        pb.ValidateOutputRequest(agent_id="billing", content="x a@b.cc y"), metadata=a.md
    )
    assert not small.findings_truncated and small.redacted_content == "x ****** y"
    try:
        grpc.channel_ready_future(server.channel()).result(timeout=5)
    except grpc.FutureTimeoutError as exc:  # the server is still up
        raise AssertionError("server not reachable after the large calls") from exc


def detector_processes(pid: int) -> list[int]:
    """The children of `pid` that are multiprocessing workers."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat_file.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat_file.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if parent == pid and b"spawn_main" in command:
            found.append(int(stat_file.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_detector_process_is_replaced_and_stopped(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server()
    a = Project(server)

    def large() -> pb.ValidateOutputResponse:
        reply = a.gov.ValidateOutput(
            pb.ValidateOutputRequest(
                agent_id="billing", content=fill("a@b.cc ", 64 * 1024), checks=[D.DETECTOR_EMAIL]
            ),
            metadata=a.md,
            timeout=120,
        )
        assert reply.findings_truncated and len(reply.findings) == detectors.MAX_FINDINGS
        return reply

    large()
    killed = detector_processes(server.process.pid)
    assert killed, "large content is scanned in a child process"
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    # The call that finds the process gone is still answered, and so are the ones after it,
    # by a new process.
    for _ in range(3):
        large()
    replacements = detector_processes(server.process.pid)
    assert replacements and not set(replacements) & set(killed)
    assert server.stop() == 0
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in replacements) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in replacements)
