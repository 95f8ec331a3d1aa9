"""The public API is exactly what __all__ lists, sorted, and every name resolves."""

from __future__ import annotations

import seamline
import seamline.boundary
import seamline.method
import seamline.models
import seamline.store


def test_public_api_is_pinned() -> None:
    """Adding or removing a public name is a deliberate change to this list."""
    assert seamline.__all__ == [
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


def test_all_lists_are_sorted_and_resolve() -> None:
    """Each module's __all__ is sorted and names only attributes that exist."""
    for module in (seamline, seamline.store, seamline.boundary, seamline.models, seamline.method):
        assert module.__all__ == sorted(module.__all__)
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_every_error_has_the_one_root() -> None:
    """Every error class seamline exports derives from SeamlineError."""
    errors = [getattr(seamline, n) for n in seamline.__all__ if n.endswith("Error")]
    assert errors
    assert all(issubclass(e, seamline.SeamlineError) for e in errors)
