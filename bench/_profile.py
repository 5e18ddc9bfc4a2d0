"""Summarise py-spy collapsed stacks (`--format raw`) into where the server's time goes."""

from __future__ import annotations

import collections
import re
from pathlib import Path

# A stack is charged to the first of these found anywhere in it (root to leaf): the whole
# subtree of the call counts.
SUBTREE = [
    ("validation (protovalidate/CEL)", r"RequestValidator\.check|protovalidate/|celpy/"),
    ("auth", r"interceptors/auth\.py|agentplane_server/auth/"),
    ("logging (access log)", r"\(logging/|agentplane_server/logs\.py"),
    ("metrics", r"interceptors/metrics\.py|prometheus_client/"),
]
# Otherwise to the leaf-most frame matching one of these.
LEAF = [
    ("db driver (aiosqlite/psycopg)", r"aiosqlite/|sqlite3/|psycopg/|psycopg_pool/"),
    ("SQLAlchemy", r"sqlalchemy/"),
    ("agentplane_server (own code)", r"agentplane_server/(?!cli\.py)"),
    ("protobuf", r"google/protobuf/"),
]
OTHER = "grpc.aio (Cython, shown as Handle._run) + asyncio loop"


def classify(frames: list[str]) -> str:
    for name, pattern in SUBTREE:
        if any(re.search(pattern, frame) for frame in frames):
            return name
    for frame in reversed(frames):
        for name, pattern in LEAF:
            if re.search(pattern, frame):
                return name
    return OTHER


def summarise(path: Path) -> dict[str, object]:
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        counts[classify(stack.split(";"))] += int(count)
    shares = {name: round(100 * n / total, 1) for name, n in counts.most_common()} if total else {}
    return {"gil_samples": total, "percent": shares}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps({p: summarise(Path(p)) for p in sys.argv[1:]}, indent=2))
