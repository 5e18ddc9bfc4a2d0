"""Policy globs (actions, resources, agent_id_patterns) as compiled regular expressions.

The contract's dialect: "*" matches any run of characters except "/", "**" any run of
characters, "?" one character except "/", everything else itself; the whole string must
match. fnmatch and glob differ ("*" crosses "/", "[...]" classes), hence this ~20-line
translation, compiled once per pattern and cached.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable


@functools.lru_cache(maxsize=16384)
def compile_glob(pattern: str) -> Callable[[str], re.Match | None]:
    parts: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                parts.append(".*")
                i += 2
                continue
            parts.append("[^/]*")
        elif ch == "?":
            parts.append("[^/]")
        else:
            parts.append(re.escape(ch))
        i += 1
    return re.compile("".join(parts), re.DOTALL).fullmatch


def glob_match(pattern: str, text: str) -> bool:
    return compile_glob(pattern)(text) is not None
