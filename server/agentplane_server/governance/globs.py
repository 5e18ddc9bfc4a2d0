"""Policy globs: the contract's dialect, compiled once per pattern. The one implementation is
the shared decision rule's (agentplane.decision), re-exported for the server's modules."""

from agentplane.decision import compile_glob, glob_match

__all__ = ["compile_glob", "glob_match"]
