"""The sandbox templates run in: Jinja's immutable sandbox, bounded in what a template builds and
in how long it runs.

Jinja's sandbox stops escapes (`{{ ''.__class__ }}`), not exhaustion: `{{ 9**9**9 }}`,
`('{0}' * 100).format(s)`, a list of ten lists of ten… printed, or `wordwrap(1)` in a loop would
hold a worker thread or the memory for good (a thread cannot be stopped from outside). So:

- sizes: every way a template builds text or a list is bounded (template_limits): numbers and
  repetitions before they are computed; `str.format`, `%`, `~`, `+`, str methods and filters
  before they build (an estimate of the result's length); printed values before they are made
  text; the output of macros, blocks and `{% set %}` blocks as it is produced; anything a call
  returns;
- all together: what each of those builds, and each item's output, is paid for from the
  request's budget (template_limits.Run), so many values each within its bound do not add up
  to unbounded memory;
- time: every loop step, call, filter, test and attribute lookup checks the run's
  deadline, and so do the filters that loop over a whole value (template_filters).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from string import Formatter
from typing import Any

from jinja2 import nodes, pass_eval_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import LoopContext, Macro, markup_join, str_join
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from jinja2.utils import Cycler, Joiner, Namespace
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

from bridge.processors.template_filters import (
    bounded_filters,
    bounded_tests,
    casing_size,
    joined_size,
    json_dumps,
    listed,
    replaced_size,
)
from bridge.processors.template_limits import (
    ITEM_CHARS,
    MACRO_CHARS,
    MAX_OUTPUT_CHARS,
    MAX_POWER_BITS,
    MAX_SIZE,
    OBJECT_CHARS,
    REFERENCE_CHARS,
    built,
    check_items,
    check_numbers,
    check_size,
    check_time,
    checked,
    comparable,
    copied,
    escaped_size,
    field_size,
    printf_size,
    spend,
    text_size,
)


def _passes_values(function: Any, owner: Any) -> bool:
    """Whether a callable only passes its arguments along as data, so a number over MAX_SIZE
    given to it is a value, not a size: macros, `dict`, `namespace`, `loop.cycle`, methods
    of dicts and lists, `str.format`."""
    return (
        isinstance(function, Macro | Cycler | Joiner)
        or function in (dict, Namespace, Cycler, Joiner)
        or isinstance(owner, dict | list | tuple | set | frozenset | LoopContext)
        or getattr(function, "bounded_format", False)
    )


def _tabbed_size(text: str, tabsize: Any = 8) -> int:
    return len(text) + text.count("\t") * (tabsize if isinstance(tabsize, int) else 8)


def _padded_size(text: str, width: Any = 0, *_: Any) -> int:
    return len(text) + (width if isinstance(width, int) else 0)


def _translated_size(text: str, table: Any = None, *_: Any) -> int:
    values: Iterable[Any] = ()
    if isinstance(table, Mapping):
        values = table.values()
    elif isinstance(table, Sequence):
        values = table
    longest = max((len(v) for v in values if isinstance(v, str)), default=1)
    return len(text) * max(longest, 1)


JINJA_KEYWORDS = frozenset({"_loop_vars", "_block_vars"})
# str methods whose answer can be larger than the text: (the text, *args) → the answer's size.
STR_METHODS: dict[str, Callable[..., int]] = {
    "replace": replaced_size,
    "expandtabs": _tabbed_size,
    "join": lambda separator, parts=(), *_: joined_size(separator, parts),
    "ljust": _padded_size,
    "rjust": _padded_size,
    "center": _padded_size,
    "zfill": _padded_size,
    "translate": _translated_size,
    **dict.fromkeys(("upper", "lower", "casefold", "title", "capitalize", "swapcase"), casing_size),
}


@pass_eval_context
def _printable(eval_ctx: EvalContext, value: Any) -> Any:
    """Every printed value (`{{ … }}`, Jinja's `finalize`): its text, escaped if need be, may
    not be over the limit; it is checked before it is made. (Every template prints: the
    common case, short text, is checked first and at once.)"""
    if type(value) is str and len(value) * 5 <= MAX_OUTPUT_CHARS:
        return value
    check_size(escaped_size(value) if eval_ctx.autoescape else text_size(value))
    return value


def joined(values: tuple[Any, ...], markup: bool) -> str:
    """`a ~ b ~ c`: Jinja's join (escaping as Markup needs), once the parts' text is measured."""
    check_time()
    size = sum((escaped_size(v) if markup else text_size(v)) for v in values)
    check_size(size)
    spend(size)
    return markup_join(values) if markup else str_join(values)


class OutputBuffer(list[str]):
    """The output of a macro, block, call or `{% set %}` block, as it is produced: counted, so
    that a loop cannot grow it past the limit before it is joined, and joined every
    JOIN_PARTS parts, so that ten million one-character parts do not cost 80 MB of pointers."""

    __slots__ = ("joined", "size")
    JOIN_PARTS = 4096

    def __init__(self) -> None:
        super().__init__()
        self.size = 0
        self.joined = 0  # parts before this one are each JOIN_PARTS parts joined

    def append(self, part: str) -> None:
        self.size += len(part)
        check_size(self.size)
        spend(len(part))
        super().append(part)
        if len(self) - self.joined >= self.JOIN_PARTS:
            tail = "".join(self[self.joined :])
            del self[self.joined :]
            super().append(tail)
            self.joined += 1

    def extend(self, parts: Iterable[str]) -> None:
        for part in parts:
            self.append(part)


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, with two changes: buffered output goes to an `OutputBuffer`, and
    `~` to `joined`."""

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.output_buffer()")

    def visit_Call(self, node: nodes.Call, frame: Frame, forward_caller: bool = False) -> None:
        # The checks `_Checkpoints` adds are called directly, not as the template's calls are
        # (through the sandbox's `call`, which would check and pay for their answer again).
        callee = node.node
        if not (isinstance(callee, nodes.ImportedName) and callee.importname in _CHECKS):
            super().visit_Call(node, frame, forward_caller=forward_caller)
            return
        self.visit(callee, frame)
        self.write("(")
        for index, argument in enumerate(node.args):
            self.write(", " if index else "")
            self.visit(argument, frame)
        self.write(")")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # The join Jinja picks: markup_join when autoescaping, decided at run time when a
        # `{% autoescape %}` block makes it volatile.
        if frame.eval_ctx.volatile:
            markup = "context.eval_ctx.volatile"
        else:
            markup = str(bool(frame.eval_ctx.autoescape))
        self.write("environment.joined((")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write(f"), {markup})")


def clocked(iterable: Iterable[Any]) -> Iterator[Any]:
    """A loop's items, the deadline checked before each (see `_Checkpoints`)."""
    check_time()
    for item in iterable:
        check_time()
        yield item


class _Checkpoints(NodeTransformer):
    """Rewrites a parsed template so that every loop checks the deadline at every step, what is
    compared (`==`, `<`, `in`…) or hashed (a dict's keys) is not too large to, and what the
    template makes without a call is paid for from the budget: a slice's copy (Jinja slices
    without the environment's `getitem`), a list, tuple or dict written in it, a `loop` or
    `caller` kept as a value, a macro defined again at every step of a loop or call."""

    def __init__(self) -> None:
        self._repeated = 0  # how many loops, macros, call blocks and blocks we are inside

    def visit_For(self, node: nodes.For) -> nodes.For:
        self._visit_repeated(node)
        node.iter = _call(clocked, node.iter)
        return node

    def visit_Macro(self, node: nodes.Macro) -> nodes.Node | list[nodes.Node]:
        repeated = self._repeated > 0
        self._visit_repeated(node)
        if not repeated:  # defined once a render (at the top, in an `if`): nothing to pay
            return node
        cost = nodes.Const(MACRO_CHARS, lineno=node.lineno)
        return [node, nodes.ExprStmt(_call(spend, cost), lineno=node.lineno)]

    def visit_CallBlock(self, node: nodes.CallBlock) -> nodes.CallBlock:
        self._visit_repeated(node)
        return node

    def visit_Block(self, node: nodes.Block) -> nodes.Block:
        self._visit_repeated(node)  # `{{ self.name() }}` runs a block again
        return node

    def _visit_repeated(self, node: nodes.Node) -> None:
        self._repeated += 1
        try:
            self.generic_visit(node)
        finally:
            self._repeated -= 1

    def visit_Compare(self, node: nodes.Compare) -> nodes.Compare:
        self.generic_visit(node)
        node.expr = _call(comparable, node.expr)
        for operand in node.ops:
            operand.expr = _call(comparable, operand.expr)
        return node

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Node:
        self._visit_owned(node)
        if isinstance(node.arg, nodes.Slice):  # `s[::-1]`, `l[1:]`: a copy, paid for
            return _call(copied, node)
        return node

    def visit_Getattr(self, node: nodes.Getattr) -> nodes.Getattr:
        self._visit_owned(node)
        return node

    def visit_Call(self, node: nodes.Call) -> nodes.Call:
        self._visit_owned(node)
        return node

    def _visit_owned(self, node: nodes.Getitem | nodes.Getattr | nodes.Call) -> None:
        """`loop.index`, `caller()`: the loop or caller used, not kept, so not paid for."""
        owner = node.node
        self.generic_visit(node)
        if isinstance(owner, nodes.Name) and owner.name in _KEPT_OBJECTS:
            node.node = owner

    def visit_Name(self, node: nodes.Name) -> nodes.Expr:
        if node.ctx == "load" and node.name in _KEPT_OBJECTS:
            return _call(built, node, nodes.Const(OBJECT_CHARS))
        return node

    def visit_List(self, node: nodes.List) -> nodes.Expr:
        self.generic_visit(node)
        return _call(built, node, nodes.Const(ITEM_CHARS + _items_cost(node.items)))

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Expr:
        self.generic_visit(node)
        if node.ctx != "load":  # `{% for a, b in … %}`, `{% set a, b = … %}`
            return node
        return _call(built, node, nodes.Const(ITEM_CHARS + _items_cost(node.items)))

    def visit_Dict(self, node: nodes.Dict) -> nodes.Expr:
        self.generic_visit(node)
        parts = [part for pair in node.items for part in (pair.key, pair.value)]
        return _call(built, node, nodes.Const(2 * ITEM_CHARS + _items_cost(parts)))

    def visit_Pair(self, node: nodes.Pair) -> nodes.Pair:
        self.generic_visit(node)
        node.key = _call(comparable, node.key)
        return node


# The objects Jinja makes for a template that it may keep as values.
_KEPT_OBJECTS = frozenset({"loop", "caller"})


def _items_cost(items: Sequence[nodes.Expr]) -> int:
    """What the items of a list, tuple or dict written in a template cost: a constant is made
    with the code, so only its reference is new; anything else may be a new object."""
    return sum(REFERENCE_CHARS if isinstance(item, nodes.Const) else ITEM_CHARS for item in items)


def _call(function: Callable[..., Any], *arguments: nodes.Node) -> nodes.Call:
    """A call of `function` (imported by name) on expressions of the template."""
    lineno = arguments[0].lineno
    name = nodes.ImportedName(_name(function), lineno=lineno)
    return nodes.Call(name, list(arguments), [], None, None, lineno=lineno)


def _name(function: Callable[..., Any]) -> str:
    return f"{function.__module__}.{function.__name__}"


_CHECKS = frozenset(_name(check) for check in (clocked, comparable, copied, built, spend))


class _Counting(Formatter):
    """A `str.format` that counts the text as each field is formatted, and checks the deadline."""

    escapes = False
    _size = 0

    def vformat(self, format_string: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        self._size = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion in ("r", "a"):  # %a's escapes are as long as JSON's, at most
            check_size(self._size + text_size(value, "repr" if conversion == "r" else "json"))
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        check_time()
        self._size += field_size(value, format_spec, escape=self.escapes)
        check_size(self._size)
        return super().format_field(value, format_spec)


class _BoundedFormatter(_Counting, SandboxedFormatter):
    pass


class _BoundedEscapeFormatter(_Counting, SandboxedEscapeFormatter):
    escapes = True


class Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with the bounds of this module's docstring; an unsafe attribute
    fails loudly instead of rendering as an empty undefined value, so a user sees why."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    output_buffer = OutputBuffer
    joined = staticmethod(joined)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.code_generator_class = _BoundedCodeGenerator
        self.finalize = _printable
        self.filters = bounded_filters(self.filters)
        self.tests = bounded_tests(self.tests)  # type: ignore[assignment,arg-type]
        self.policies["json.dumps_function"] = json_dumps
        del self.globals["lipsum"]  # placeholder text, up to gigabytes of it: not for workflows

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(
            f"access to attribute {attribute!r} of a {type(obj).__name__} is not allowed"
        )

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = _Checkpoints().visit(super()._parse(source, name, filename))
        tree.set_environment(self)
        return tree  # type: ignore[no-any-return]

    def getattr(self, obj: Any, attribute: str) -> Any:
        check_time()  # also each step of sort(attribute=…), map(attribute=…), groupby…
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        check_time()
        return super().getitem(obj, argument)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and max(abs(left), 2).bit_length() * right > MAX_POWER_BITS:
                raise SecurityError(f"{left} ** {right} is too large for a template")
        elif operator == "*":
            both_ints = isinstance(left, int) and isinstance(right, int)
            if both_ints and left.bit_length() + right.bit_length() > MAX_POWER_BITS:
                raise SecurityError("a product of numbers this large is not allowed")
            for sequence, times in ((left, right), (right, left)):
                sized = isinstance(sequence, str | list | tuple) and isinstance(times, int)
                if sized and text_size(sequence) * times > MAX_SIZE:
                    raise SecurityError(f"a repetition over {MAX_SIZE:,} is not allowed")
        elif operator == "%" and isinstance(left, str):
            check_size(printf_size(left, right, escape=hasattr(left, "__html__")))
        elif operator == "+":
            if isinstance(left, str) and isinstance(right, str):
                check_size(len(left) + len(right))
            elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
                check_items(len(left) + len(right))
        return copied(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        check_time()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            name = __obj.__name__
            if name == "encode":
                raise SecurityError("bytes are not available in templates")
            estimate = STR_METHODS.get(name)
            if estimate is not None:
                if name == "join" and args:
                    args = (listed(args[0]), *args[1:])
                # Jinja adds the names a loop or block sets (for macros that take the context).
                named = {k: v for k, v in kwargs.items() if k not in JINJA_KEYWORDS}
                check_size(estimate(owner, *args, **named))
        elif isinstance(owner, LoopContext) and __obj.__name__ == "changed":
            for value in args:
                comparable(value)  # compared with the last step's
        elif not _passes_values(__obj, owner):
            check_numbers(args, kwargs)
        return checked(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format` and `format_map`, as Jinja's sandbox makes them, but counting the text
        as each field is formatted."""
        methods = types.MethodType | types.BuiltinMethodType
        if not isinstance(value, methods) or value.__name__ not in ("format", "format_map"):
            return None
        text = value.__self__
        if not isinstance(text, str):
            return None
        kind = type(text)
        formatter: _Counting = (
            _BoundedEscapeFormatter(self, escape=text.escape)
            if isinstance(text, Markup)
            else _BoundedFormatter(self)
        )
        is_map = value.__name__ == "format_map"

        def format_text(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                return kind(formatter.vformat(text, (), args[0]))
            return kind(formatter.vformat(text, args, kwargs))

        format_text.__name__ = value.__name__
        format_text.bounded_format = True  # type: ignore[attr-defined]
        return format_text
