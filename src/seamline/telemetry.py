"""Tracing: OpenTelemetry spans for runs, model calls, verdicts, gates, commits, tools,
transitions and human actions.

Nothing is traced until :func:`configure_tracing` is called; until then :func:`span` hands
back one shared do-nothing context manager, so instrumentation costs a function call.

Configured, finished spans are redacted once (secrets and configured PII fields become
``[redacted]``) and then handed to: an OTLP exporter when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is
set, an extra exporter if one is given, and a bounded in-memory buffer that
:func:`flush_spans` drains into a store. A boundary flushes at the end of each run and the
long-running commands flush before they exit, so a trace is readable from the store alone and
only the spans of a process that crashed are lost.

Seamline keeps its own provider rather than the process-global one: OpenTelemetry lets the
global be set once per process, and tests (or an embedding application) need to install
their own.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Status, StatusCode

from seamline import codec

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from seamline.store import Store

__all__ = [
    "DEFAULT_REDACT_FIELDS",
    "REDACTED",
    "STATUS_ERROR",
    "RedactingFilter",
    "Redactor",
    "configure_tracing",
    "current_trace_id",
    "SPAN_BATCH",
    "SPAN_MAX_AGE_S",
    "flush_spans",
    "provider_name",
    "redactor",
    "set_error",
    "shutdown_tracing",
    "shutdown_tracing_sync",
    "span",
    "tracer",
    "tracing_enabled",
]

REDACTED = "[redacted]"
STATUS_ERROR = "error"
"""A kept span's ``status`` when it failed. Kept statuses are OpenTelemetry's status codes in
lower case (``unset``, ``ok``, ``error``): the one spelling the store, metrics and
``seamline runs show`` compare with."""
DEFAULT_REDACT_FIELDS = ("email", "phone", "name", "address", "customer_name")
"""PII field names redacted by default (the Telco data's customer fields and the like)."""

_SECRET_WORDS = frozenset(
    {"password", "passwd", "pwd", "secret", "token", "authorization", "apikey", "api_key"}
)
_SECRET_VALUES = (
    # provider API keys: sk-..., sk-ant-..., sk-proj-...
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/\-]{8,}=*"), r"\1 " + REDACTED),
    # a password inside a URL: scheme://user:PASSWORD@host
    (re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)[^@\s/]+@"), r"\1" + REDACTED + "@"),
)
_TRIGGERS = (("sk-",), ("bearer", "basic"), ("://",))
# Keys naming who acted: a user, ``token:NAME``, ``gate:NAME``, ``sla``. Names from config,
# never secrets, and what an audit needs: ``token:ops`` is not a ``token: value`` pair.
_WHO_KEYS = frozenset({"principal", "actor", "by", "decided_by", "requested_by"})
_MAX_BUFFER = 20_000
_OWN_NAMESPACES = ("gen_ai.", "seamline.", "otel.")


class Redactor:
    """Replaces secrets and the named PII fields by ``[redacted]`` in span attributes and
    text. A key is secret when one of its words (split at ``.``, ``_`` and ``-``) names a
    secret (``api_key``, ``password``, ``token``, ``authorization``, ``secret``), or when its
    last part is one of ``fields``; in free text, API keys, bearer tokens, URL passwords and
    ``field: value`` / ``field=value`` pairs of those fields are replaced. Values of keys
    that name who acted (``seamline.principal``, ``actor``, ``decided_by``…) are kept."""

    def __init__(self, fields: Sequence[str] = DEFAULT_REDACT_FIELDS) -> None:
        self.fields = frozenset(f.strip().lower() for f in fields if f.strip())
        self._keys: dict[str, bool] = {}
        self._names = tuple(sorted(self.fields | {"api_key", "password", "token"}))
        names = "|".join(map(re.escape, self._names))
        self._pairs = re.compile(
            rf"""(?i)(["']?\b(?:{names})\b["']?\s*[:=]\s*)("[^"]*"|'[^']*'|[^\s,;&}}\]]+)"""
        )
        # One scan for anything any rule below could act on: most values hold none of it.
        triggers = [t for group in _TRIGGERS for t in group] + list(self._names)
        self._anything = re.compile("(?i)" + "|".join(map(re.escape, triggers)))

    def secret_key(self, key: str) -> bool:
        known = self._keys.get(key)
        if known is None:
            known = self._secret_key(key)
            if len(self._keys) < 4096:  # attribute keys are a small, fixed set
                self._keys[key] = known
        return known

    def _secret_key(self, key: str) -> bool:
        lowered = key.lower()
        last = lowered.rsplit(".", 1)[-1]
        if "api_key" in lowered or "apikey" in lowered:
            return True
        # seamline's and the GenAI conventions' own keys (gen_ai.tool.name) name no PII
        if last in self.fields and not lowered.startswith(_OWN_NAMESPACES):
            return True
        return any(word in _SECRET_WORDS for word in re.split(r"[._\-]", lowered))

    def text(self, value: str) -> str:
        if self._anything.search(value) is None:  # the common case, in one C-level scan
            return value
        lowered = value.lower()
        for (pattern, replacement), trigger in zip(_SECRET_VALUES, _TRIGGERS, strict=True):
            if any(t in lowered for t in trigger):
                value = pattern.sub(replacement, value)
        if not any(name in lowered for name in self._names):
            return value
        return self._pairs.sub(
            lambda m: m.group(1) + ('"' + REDACTED + '"' if m.group(2)[0] in "\"'" else REDACTED),
            value,
        )

    def attributes(self, attributes: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in attributes.items():
            if self.secret_key(key):
                out[key] = REDACTED
            elif _names_who(key):
                out[key] = value
            elif isinstance(value, str):
                out[key] = self.text(value)
            elif isinstance(value, tuple | list) and any(isinstance(v, str) for v in value):
                out[key] = tuple(self.text(v) if isinstance(v, str) else v for v in value)
            else:
                out[key] = value
        return out

    def value(self, value: Any) -> Any:
        """A JSON-like value (an event payload, a row's data) redacted at every depth: the
        values of secret and PII keys, and secrets and ``field: value`` pairs in text."""
        if isinstance(value, Mapping):
            return {k: self._item(k, v) for k, v in value.items()}
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def _item(self, key: object, value: Any) -> Any:
        if not isinstance(key, str):
            return self.value(value)
        if self.secret_key(key):
            return REDACTED
        return value if _names_who(key) else self.value(value)

    def span(self, span: ReadableSpan) -> ReadableSpan:
        """A copy of ``span`` with its attributes, events and status text redacted (the span
        itself when nothing in it needs redacting)."""
        status = span.status
        if status.description:
            status = Status(status.status_code, self.text(status.description))
        original = span.attributes or {}
        attributes = self.attributes(original)
        if (
            not span.events
            and status.description == span.status.description
            and attributes == dict(original)
        ):
            return span
        return ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=attributes,
            events=[
                type(e)(e.name, self.attributes(e.attributes or {}), e.timestamp)
                for e in span.events
            ],
            links=span.links,
            kind=span.kind,
            status=status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )


@functools.lru_cache(maxsize=4096)
def _names_who(key: str) -> bool:
    return key.lower().rsplit(".", 1)[-1] in _WHO_KEYS


class RedactingFilter(logging.Filter):
    """Redacts a log record's message (arguments merged in) before any handler sees it.

    Installed on the ``seamline`` logger, it sees the records logged to that logger; add it
    to a handler as well to cover records of child loggers (``seamline.x``) too."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self.redactor.text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class _Redacting(SpanProcessor):
    """Redacts each finished span once, then hands the copy to the processors behind it:
    no exporter and no buffer ever sees an unredacted attribute."""

    def __init__(self, redactor: Redactor, processors: Sequence[SpanProcessor]) -> None:
        self.redactor = redactor
        self.processors = tuple(processors)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        clean = self.redactor.span(span)
        for p in self.processors:
            p.on_end(clean)

    def shutdown(self) -> None:
        for p in self.processors:
            p.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(p.force_flush(timeout_millis) for p in self.processors)


class _Keep(SpanProcessor):
    """Buffers finished spans for :func:`flush_spans`. Bounded: past ``limit`` unflushed
    spans the oldest are dropped (and counted), so a process that never flushes cannot grow
    without end. ``deque`` appends and pops are atomic, so spans may end on any thread."""

    def __init__(self, limit: int = _MAX_BUFFER) -> None:
        self.buffer: deque[ReadableSpan] = deque(maxlen=limit)
        self.dropped = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if len(self.buffer) == self.buffer.maxlen:
            self.dropped += 1
        self.buffer.append(span)

    def take(self) -> list[ReadableSpan]:
        taken: list[ReadableSpan] = []
        while True:
            try:
                taken.append(self.buffer.popleft())
            except IndexError:
                return taken

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _Tracing:
    """What :func:`configure_tracing` set up; one per process, replaced as a whole."""

    def __init__(self) -> None:
        self.provider: TracerProvider | None = None
        self.tracer: trace.Tracer | None = None
        self.keep: _Keep | None = None
        self.store: Store | None = None
        self.filter: RedactingFilter | None = None
        self.lock = threading.Lock()


_state = _Tracing()


class _NoSpan(AbstractContextManager[trace.Span]):
    def __enter__(self) -> trace.Span:
        return trace.INVALID_SPAN

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()


def configure_tracing(
    store: Store | None = None,
    *,
    keep_spans: bool | None = None,
    redact_fields: Sequence[str] = DEFAULT_REDACT_FIELDS,
    exporter: SpanExporter | None = None,
    service_name: str = "seamline",
) -> TracerProvider:
    """Start tracing seamline's work, replacing any earlier configuration (whose spans are
    flushed to its exporters first).

    Spans go, redacted, to: OTLP over HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the
    standard ``OTEL_EXPORTER_OTLP_*`` variables apply); ``exporter``, if given, span by span;
    and, when ``keep_spans`` (default: a ``store`` was given), a bounded buffer that
    :func:`flush_spans` writes to a store. ``store`` is where :func:`shutdown_tracing` puts
    what is left. PII fields are ``redact_fields`` plus the comma-separated
    ``SEAMLINE_REDACT_FIELDS``.
    """
    shutdown_tracing_sync()
    redacting = redactor(redact_fields)
    processors: list[SpanProcessor] = []
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processors.append(BatchSpanProcessor(OTLPSpanExporter()))
    if exporter is not None:
        processors.append(SimpleSpanProcessor(exporter))
    keep = _Keep() if (store is not None if keep_spans is None else keep_spans) else None
    if keep is not None:
        processors.append(keep)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(_Redacting(redacting, processors))
    log_filter = RedactingFilter(redacting)
    logging.getLogger("seamline").addFilter(log_filter)
    with _state.lock:
        _state.provider, _state.keep, _state.store = provider, keep, store
        _state.tracer = provider.get_tracer("seamline")
        _state.filter = log_filter
    return provider


def redactor(fields: Sequence[str] = DEFAULT_REDACT_FIELDS) -> Redactor:
    """The redactor tracing uses: PII ``fields`` plus the comma-separated
    ``SEAMLINE_REDACT_FIELDS`` (the console redacts its pages with the same rules)."""
    env_fields = [f for f in os.environ.get("SEAMLINE_REDACT_FIELDS", "").split(",") if f.strip()]
    return Redactor([*fields, *env_fields])


def tracing_enabled() -> bool:
    return _state.tracer is not None


def tracer() -> trace.Tracer:
    """The tracer instrumentation uses: seamline's, or OpenTelemetry's no-op one."""
    return _state.tracer or trace.NoOpTracer()


def span(
    name: str, attributes: Mapping[str, Any] | None = None
) -> AbstractContextManager[trace.Span]:
    """A span around a block, child of the span in force; an exception escaping the block
    is recorded and sets status ERROR. Not tracing: one shared context manager that does
    nothing."""
    t = _state.tracer
    if t is None:
        return _NO_SPAN
    return t.start_as_current_span(name, attributes=_clean_attributes(attributes))


def _clean_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """OpenTelemetry drops None values with a warning; drop them quietly."""
    if attributes is None:
        return None
    return {k: v for k, v in attributes.items() if v is not None}


def set_error(current: trace.Span, description: str) -> None:
    """Mark ``current`` failed (an expected failure: a tool error, a failed run)."""
    current.set_status(Status(StatusCode.ERROR, description))


_PROVIDERS = {
    "OpenAIChatModel": "openai",
    "AnthropicModel": "anthropic",
    "SimulatedModel": "seamline.simulated",
    "ScriptedModel": "seamline.scripted",
    "RecordedModel": "seamline.recorded",
}


def provider_name(model: object) -> str:
    """``gen_ai.provider.name`` for a model: its ``provider`` attribute if it has one."""
    named = getattr(model, "provider", None)
    if isinstance(named, str):
        return named
    kind = type(model).__name__
    return _PROVIDERS.get(kind, kind.lower())


def current_trace_id() -> str | None:
    """The trace id of the span in force, in lower-case hex (None: not tracing)."""
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


def _record(s: ReadableSpan) -> Any:
    from seamline.store import SpanRecord

    context = s.context
    assert context is not None
    attributes = dict(s.attributes or {})
    run_id = attributes.get("seamline.run_id")
    status = s.status.status_code.name.lower()  # unset, ok or STATUS_ERROR
    if s.status.description:
        attributes["otel.status_description"] = s.status.description
    return SpanRecord(
        span_id=f"{context.span_id:016x}",
        trace_id=f"{context.trace_id:032x}",
        parent_id=f"{s.parent.span_id:016x}" if s.parent is not None else None,
        name=s.name,
        run_id=str(run_id) if run_id is not None else None,
        started_at=_at(s.start_time),
        ended_at=_at(s.end_time),
        status=status,
        attributes_json=codec.encode({k: _plain(v) for k, v in attributes.items()}),
    )


def _at(nanos: int | None) -> datetime:
    return datetime.fromtimestamp((nanos or 0) / 1e9, UTC)


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


SPAN_BATCH = 512
"""A boundary run writes the buffered spans once this many have finished (or the oldest is
:data:`SPAN_MAX_AGE_S` old): one write per batch instead of one durable write per run."""
SPAN_MAX_AGE_S = 2.0


async def flush_spans(
    store: Store | None = None, *, at_least: int = 1, older_than_s: float | None = None
) -> int:
    """Write the finished spans buffered so far to ``store`` (default: the configured one);
    returns how many. With ``at_least``, only once that many are buffered, or (with
    ``older_than_s``) once the oldest ended that many seconds ago. A failed write puts them
    back for the next flush (the buffer stays bounded) and is logged, never raised: tracing
    must not break the work it watches."""
    keep = _state.keep
    target = store if store is not None else _state.store
    if keep is None or target is None or not keep.buffer:
        return 0
    if len(keep.buffer) < at_least:
        oldest = keep.buffer[0].end_time or 0
        if older_than_s is None or time.time_ns() - oldest < older_than_s * 1e9:
            return 0
    taken = keep.take()
    if not taken:
        return 0
    from seamline.store import UnitOfWork

    try:
        await target.apply(UnitOfWork().record_spans([_record(s) for s in taken]))
    except Exception as exc:  # a store that is down: keep the spans for the next flush
        keep.buffer.extendleft(reversed(taken))
        # the seamline logger itself: its filter redacts the error text (a URL, a password)
        logging.getLogger("seamline").warning(
            "could not keep %d span(s) in the store: %s: %s", len(taken), type(exc).__name__, exc
        )
        return 0
    return len(taken)


def shutdown_tracing_sync() -> None:
    """Stop tracing: exporters flush and close; buffered spans not yet flushed are dropped
    (call :func:`shutdown_tracing` from async code to keep them)."""
    with _state.lock:
        provider, log_filter = _state.provider, _state.filter
        _state.provider = _state.tracer = _state.keep = _state.store = _state.filter = None
    if log_filter is not None:
        logging.getLogger("seamline").removeFilter(log_filter)
    if provider is not None:
        provider.shutdown()


async def shutdown_tracing(store: Store | None = None) -> None:
    """Flush what is buffered into ``store`` (default: the configured one), then stop."""
    await flush_spans(store)
    shutdown_tracing_sync()
