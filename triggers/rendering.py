"""Marketer-written templates: Liquid in a sandbox, strict about missing variables, with limits.

Liquid (python-liquid) cannot reach Python objects or the file system: no template loader is
configured, so ``include``/``render`` find nothing, and the context holds only plain data. A
variable that is missing and has no ``default`` aborts the render with a reason, so nobody gets
"Hi ,".

Every render has ceilings (DESIGN §4.5, docs/security.md "Template limits"), the same in the
preview, the sandbox, backtests and the worker, because they all render through this module:

- a range (``(1..n)``) has at most ``LIMITS.range_items`` items. python-liquid's ranges are lazy
  (``range`` objects), which is why its own loop and output caps never saw ``(1..n) | join``: the
  filter materialised 10⁸ items before anything was written. Every range expression of a parsed
  template is swapped for :class:`_CappedRange`, which refuses a bigger one when it is evaluated,
  and :func:`validate_source` refuses one written with literal bounds at save time;
- loops: ``LIMITS.loop_iterations`` iterations in all (nested loops multiply), python-liquid's own
  ``loop_iteration_limit``;
- output: ``LIMITS.output_bytes`` bytes (``output_stream_limit``), and no filter may take or
  produce a list of more than ``range_items`` items, nor produce a string of more than
  ``output_bytes`` characters or a number of more than ``number_digits`` digits; ``join`` and
  ``replace`` are refused *before* they run when their result would be over it;
- time: ``LIMITS.seconds`` of CPU time per render, checked on every filter call, variable lookup,
  assignment and write, so the work between two checks is bounded by the sizes above.

A render over a limit raises :class:`TemplateProblem` with ``reason == "limits"`` (a missing
variable gives ``"render"``); the pipeline handles both alike (fallback channel or review item).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import Any

from liquid import BoundTemplate, Environment, RenderContext, StrictDefaultUndefined, Undefined
from liquid.builtin.expressions.primitive import Literal, RangeLiteral
from liquid.exceptions import FilterArgumentError, LiquidError, ResourceLimitError
from liquid.filter import sequence_filter
from liquid.output import LimitedStringIO

_FORBIDDEN_TAGS = {"include", "render"}


@dataclass(frozen=True)
class Limits:
    """The ceilings of one render (docs/security.md lists them for marketers and operators)."""

    range_items: int = 10_000
    loop_iterations: int = 10_000
    output_bytes: int = 100_000
    number_digits: int = 1_000
    seconds: float = 1.0


LIMITS = Limits()


class TemplateLimitError(ResourceLimitError):
    """A render went over one of :data:`LIMITS` (a range, a value, the render time)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, token=None)


def _describe_range(size: int) -> str:
    return f"a range has at most {LIMITS.range_items:,} items; this one has {size:,}".replace(
        ",", " "
    )


def range_size(value: range) -> int:
    """How many items a range has, without ``len`` (which overflows past ``sys.maxsize``)."""
    return max(0, (value.stop - value.start) // (value.step or 1))


class _CappedRange(RangeLiteral):
    """A range expression that refuses to make a range over the limit."""

    __slots__ = ()

    def _make_range(self, start: Any, stop: Any) -> range:
        made = super()._make_range(start, stop)  # lazy: nothing is materialised yet
        size = range_size(made)
        if size > LIMITS.range_items:
            raise TemplateLimitError(_describe_range(size))
        return made


def _expressions(template: BoundTemplate) -> Iterable[Any]:
    """Every expression of a parsed template, nested ones included (no partials: no loader)."""
    static_context = RenderContext(template)
    nodes = list(template.nodes)
    while nodes:
        node = nodes.pop()
        expressions = list(node.expressions())
        while expressions:
            expression = expressions.pop()
            yield expression
            expressions.extend(expression.children())
        nodes.extend(node.children(static_context, include_partials=False))


def literal_range_problem(template: BoundTemplate) -> str | None:
    """Why a range written with literal bounds is over the limit, or None."""
    for expression in _expressions(template):
        if not isinstance(expression, RangeLiteral):
            continue
        bounds = (expression.start, expression.stop)
        if all(isinstance(bound, Literal) for bound in bounds):
            try:
                made = RangeLiteral._make_range(expression, *(b.value for b in bounds))
            except LiquidError as error:
                return _first_line(error)
            size = range_size(made)
            if size > LIMITS.range_items:
                return f"{_describe_range(size)} ({expression})"
    return None


class _Clock:
    """The render's CPU-time budget (thread time: a busy machine does not abort a render).

    Reading the thread's CPU clock is a system call (about 2 µs); the monotonic clock is not
    (50 ns), and a thread cannot have used more CPU time than wall time has passed, so the CPU
    clock is read only once the wall clock is past the budget."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.wall_deadline = time.monotonic() + seconds
        self.deadline = time.thread_time() + seconds

    def check(self) -> None:
        if time.monotonic() > self.wall_deadline and time.thread_time() > self.deadline:
            raise TemplateLimitError(
                f"the render took more than {self.seconds:g} s of CPU time (the limit)"
            )


class _LimitedBuffer(LimitedStringIO):
    """python-liquid's output cap, plus the time check on every write."""

    def __init__(self, limit: int, clock: _Clock | None) -> None:
        super().__init__(limit=limit)
        self.clock = clock

    def write(self, text: str) -> int:
        if self.clock is not None:
            self.clock.check()
        return super().write(text)


class _LimitedContext(RenderContext):
    """A render context that checks the time on every lookup, assignment and write."""

    clock: _Clock | None = None

    def get(self, path: list[object], *args: Any, **kwargs: Any) -> object:
        if self.clock is not None:
            self.clock.check()
        return super().get(path, *args, **kwargs)

    def assign(self, key: str, val: Any) -> None:
        if self.clock is not None:
            self.clock.check()
        _check_value(val)
        super().assign(key, val)

    def get_buffer(self, buf: Any = None) -> _LimitedBuffer:
        carry = buf.size if isinstance(buf, LimitedStringIO) else 0
        return _LimitedBuffer(self.env.output_stream_limit - carry, self.clock)

    def copy(self, *args: Any, **kwargs: Any) -> RenderContext:
        copied = super().copy(*args, **kwargs)
        copied.clock = self.clock
        return copied


class _LimitedTemplate(BoundTemplate):
    """A parsed template whose ``render`` runs under :data:`LIMITS`, on a fresh CPU-time budget."""

    context_class = _LimitedContext

    def render(self, *args: Any, **kwargs: Any) -> str:
        return self.render_within(_Clock(LIMITS.seconds), dict(*args, **kwargs))

    def render_within(self, clock: _Clock, data: dict[str, Any]) -> str:
        """Render ``data`` on an existing budget (a subject and a body share one)."""
        context = self.context_class(self, globals=self.make_globals(data))
        context.clock = clock
        buffer = _LimitedBuffer(self.env.output_stream_limit, clock)
        self.render_with_context(context, buffer)
        return buffer.getvalue()


def _check_value(value: Any) -> None:
    """Refuse a value over the limits (a filter's input or result, an assigned value).

    Types are read with ``type()``: ``isinstance`` would ask a strict ``Undefined`` for its
    ``__class__``, which raises."""
    kind = type(value)
    if kind is range:
        size = range_size(value)
        if size > LIMITS.range_items:
            raise TemplateLimitError(_describe_range(size))
    elif issubclass(kind, str):
        if len(value) > LIMITS.output_bytes:
            raise TemplateLimitError(
                f"a value has at most {LIMITS.output_bytes:,} characters; "
                f"this one has {len(value):,}".replace(",", " ")
            )
    elif issubclass(kind, int) and kind is not bool:
        # bit_length is O(1); 3.33 bits per decimal digit
        if value.bit_length() > LIMITS.number_digits * 3.33:
            raise TemplateLimitError(f"a number has at most {LIMITS.number_digits} digits")
    elif issubclass(kind, (list, tuple, dict)) and len(value) > LIMITS.range_items:
        raise TemplateLimitError(
            f"a list has at most {LIMITS.range_items:,} items; this one has {len(value):,}".replace(
                ",", " "
            )
        )


def _as_text(value: Any) -> str | None:
    kind = type(value)
    if issubclass(kind, Undefined):
        return None
    return value if issubclass(kind, str) else str(value)


def _estimate_join(left: Any, args: tuple, kwargs: dict) -> int:
    separator = args[0] if args else kwargs.get("separator", " ")
    kind = type(left)
    sized = issubclass(kind, Sized) and not issubclass(kind, (str, Undefined))
    count = len(left) if sized else 1
    return max(0, count - 1) * len(_as_text(separator) or "")


def _estimate_replace(left: Any, args: tuple, kwargs: dict) -> int:
    text = _as_text(left)
    if text is None or len(args) < 2:
        return 0
    old, new = _as_text(args[0]) or "", _as_text(args[1]) or ""
    return len(text) + text.count(old) * max(0, len(new) - len(old))


_MISSING = object()


@sequence_filter
def _uniq(sequence: Iterable[Any], key: object = None) -> list[object]:
    """Liquid's ``uniq`` in linear time for hashable items (python-liquid's compares every pair:
    1.5 s for 10 000 numbers); unhashable items (objects) are still compared one by one."""
    hashable: set[Any] = set()
    unhashable: list[Any] = []
    result = []
    for obj in sequence:
        item = obj
        if key is not None:
            try:
                item = obj[key]
            except KeyError:
                item = _MISSING
            except TypeError as error:
                raise FilterArgumentError(
                    f"can't read property '{key}' of {obj}", token=None
                ) from error
        try:
            if item in hashable:
                continue
            hashable.add(item)
        except TypeError:
            if item in unhashable:
                continue
            unhashable.append(item)
        result.append(obj)
    return result


# Filters whose result can be far bigger than their input: checked before they run.
_ESTIMATES: dict[str, Callable[[Any, tuple, dict], int]] = {
    "join": _estimate_join,
    "replace": _estimate_replace,
}


def _guarded(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with the time check, its inputs and result checked, and its size estimated."""
    wants_context = getattr(func, "with_context", False)
    wants_environment = getattr(func, "with_environment", False)
    estimate = _ESTIMATES.get(name)

    @wraps(func)
    def guarded(left: Any, *args: Any, context: RenderContext, **kwargs: Any) -> Any:
        clock = getattr(context, "clock", None)
        if clock is not None:
            clock.check()
        for value in (left, *args, *kwargs.values()):
            if issubclass(type(value), (range, list, tuple, dict)):
                _check_value(value)
        if estimate is not None and estimate(left, args, kwargs) > LIMITS.output_bytes:
            raise TemplateLimitError(
                f"{name} would make a value over {LIMITS.output_bytes:,} characters".replace(
                    ",", " "
                )
            )
        if wants_context:
            kwargs["context"] = context
        if wants_environment:
            kwargs["environment"] = context.env
        result = func(left, *args, **kwargs)
        _check_value(result)
        return result

    guarded.with_context = True  # type: ignore[attr-defined]
    guarded.with_environment = False  # type: ignore[attr-defined]
    guarded.__dict__.pop("filter_async", None)  # copied by wraps; async rendering is not used
    return guarded


class _SandboxEnvironment(Environment):
    """No loader (templates cannot include others), strict undefined, every limit applied."""

    template_class = _LimitedTemplate
    output_stream_limit = LIMITS.output_bytes
    loop_iteration_limit = LIMITS.loop_iterations
    context_depth_limit = 20
    local_namespace_limit = 10_000

    def setup_tags_and_filters(self, *, extra: bool = False) -> None:
        super().setup_tags_and_filters(extra=extra)
        self.filters["uniq"] = _uniq
        self.filters = {name: _guarded(name, func) for name, func in self.filters.items()}

    def from_string(self, source: str, *args: Any, **kwargs: Any) -> BoundTemplate:
        template = super().from_string(source, *args, **kwargs)
        for expression in _expressions(template):
            if type(expression) is RangeLiteral:
                expression.__class__ = _CappedRange
        return template


# What a draft shows where a variable is missing, for support staff to replace before sending.
MISSING_MARK = "[missing: {name}]"
MISSING_PREFIX = MISSING_MARK.split("{", 1)[0]


class _MarkedUndefined(Undefined):
    """A missing variable renders as ``[missing: name]`` (and ``default`` still applies)."""

    __slots__ = ()

    def __str__(self) -> str:
        # The hint names the whole path ("person.traits.plan is undefined"), the name only its start.
        hint = self.hint or ""
        path = hint.removesuffix(" is undefined") if hint.endswith(" is undefined") else self.name
        return MISSING_MARK.format(name=path.strip("'\""))


ENVIRONMENT = _SandboxEnvironment(undefined=StrictDefaultUndefined, autoescape=False)
HTML_ENVIRONMENT = _SandboxEnvironment(undefined=StrictDefaultUndefined, autoescape=True)
DRAFT_ENVIRONMENT = _SandboxEnvironment(undefined=_MarkedUndefined, autoescape=False)


class TemplateProblem(ValueError):
    """A template that cannot be saved or rendered: the field, why, and the kind of reason.

    ``reason`` is ``"limits"`` when a limit stopped it (the decision log and review items say so),
    else ``"render"`` (a missing variable, a filter given the wrong kind of value, bad syntax)."""

    def __init__(self, field: str, message: str, reason: str = "render") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.reason = reason

    @classmethod
    def from_error(cls, field: str, error: LiquidError) -> TemplateProblem:
        reason = "limits" if isinstance(error, ResourceLimitError) else "render"
        return cls(field, _first_line(error), reason)


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else error.__class__.__name__


def validate_source(field: str, source: str) -> None:
    """Refuse a template that cannot work: bad syntax, unknown filters, includes, and ranges
    whose literal bounds are over the limit."""
    try:
        template = ENVIRONMENT.from_string(source)
    except LiquidError as error:
        raise TemplateProblem.from_error(field, error) from None
    too_big = literal_range_problem(template)
    if too_big:
        raise TemplateProblem(field, too_big, "limits")
    tags = set(template.tag_names(include_partials=False))
    forbidden = tags & _FORBIDDEN_TAGS
    if forbidden:
        raise TemplateProblem(field, f"the {sorted(forbidden)[0]} tag is not allowed")
    unknown = set(template.filter_names(include_partials=False)) - set(ENVIRONMENT.filters)
    if unknown:
        raise TemplateProblem(field, f"unknown filter {sorted(unknown)[0]!r}")


def person_context(person: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a template can read: the person's traits at the top level, plus ``person``."""
    traits = {k: v for k, v in (person.traits or {}).items() if isinstance(k, str)}
    person_data = {
        "id": person.pk,
        "external_id": person.external_id or "",
        "email": person.email,
        "phone": person.phone,
        "timezone": person.timezone,
        "traits": traits,
    }
    context = {**traits, "person": person_data}
    if person.email and "email" not in context:
        context["email"] = person.email
    return {**context, **(extra or {})}


@lru_cache(maxsize=512)
def _parsed(source: str, *, html: bool) -> _LimitedTemplate:
    """A parsed template, kept: parsing costs more than rendering, and a worker renders the same
    few templates for everyone (a parsed template holds no render state)."""
    return (HTML_ENVIRONMENT if html else ENVIRONMENT).from_string(source)


def render(subject: str, body: str, context: dict[str, Any], *, html: bool = False) -> Rendered:
    """Render strictly, within :data:`LIMITS` (one time budget for both fields); raises
    TemplateProblem naming the field and the missing variable or the limit."""
    clock = _Clock(LIMITS.seconds)
    out = []
    for field, source in (("subject", subject), ("body", body)):
        try:
            template = _parsed(source, html=html) if source else None
            out.append(template.render_within(clock, context) if template is not None else "")
        except LiquidError as error:
            raise TemplateProblem.from_error(field, error) from None
    return Rendered(*out)


def render_draft(subject: str, body: str, context: dict[str, Any]) -> Rendered:
    """Render for a person to edit (support's "Edit and send"): what the strict render would give,
    with each missing variable marked ``[missing: name]`` instead of failing. A template that does
    not render at all gives its source."""
    out = []
    for source in (subject, body):
        try:
            out.append(DRAFT_ENVIRONMENT.from_string(source).render(**context) if source else "")
        except LiquidError:
            out.append(source)
    return Rendered(*out)
