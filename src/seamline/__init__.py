"""seamline: a runtime for production LLM agents.

Where a model's stochastic output becomes a deterministic action, seamline puts a typed,
durable boundary. This package's public API is what ``__all__`` lists.
"""

from seamline._version import __version__
from seamline.boundary import (
    Boundary,
    Committed,
    EffectCommit,
    Escalate,
    Escalated,
    Fail,
    Failed,
    Fallback,
    Runtime,
    StoreCommit,
)
from seamline.budget import Budget
from seamline.clock import Clock, SystemClock, VirtualClock, advance_to_next_timer
from seamline.errors import (
    CodecError,
    ConfigError,
    SchemaVersionError,
    SeamlineError,
    StoreError,
    StoreUnavailableError,
)
from seamline.store import (
    Applied,
    Duplicate,
    NotPending,
    Outcome,
    StaleOffset,
    StaleVersion,
    Store,
    UnitOfWork,
    open_store,
)

__all__ = [
    "Applied",
    "Boundary",
    "Budget",
    "Clock",
    "CodecError",
    "Committed",
    "ConfigError",
    "Duplicate",
    "EffectCommit",
    "Escalate",
    "Escalated",
    "Fail",
    "Failed",
    "Fallback",
    "NotPending",
    "Outcome",
    "Runtime",
    "SchemaVersionError",
    "SeamlineError",
    "StaleOffset",
    "StaleVersion",
    "Store",
    "StoreCommit",
    "StoreError",
    "StoreUnavailableError",
    "SystemClock",
    "UnitOfWork",
    "VirtualClock",
    "__version__",
    "advance_to_next_timer",
    "open_store",
]
