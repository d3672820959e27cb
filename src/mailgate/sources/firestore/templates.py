"""Handlebars templates rendered in a sandbox, as the Trigger Email extension renders
them.

Templates are Handlebars, rendered with pybars4 as the extension renders with
handlebars.js: ``subject`` and ``text`` unescaped, ``html`` escaped, partials per part
from the template documents marked ``partial``, message fields overridden by what the
template renders. pybars4 compiles a template to Python source and ``exec``\\ s it, and
as shipped (0.9.13) a template can break out of that source (a ``{{[a' + code + ']}}``
path), reach Python attributes through data (``{{name.format}}``), never escapes HTML,
and its whitespace regex backtracks exponentially. So here: the parse tree is checked
before code is generated, the generated code is checked against an allowlist of names
and node types and run with four builtins, name lookup reads only dict keys and list
items, escaping is Handlebars 4's, whitespace control uses non-backtracking regexes,
and template size, parse work, render work and output are bounded
(:data:`MAX_TEMPLATE_CHARS`, :data:`MAX_TAG_CHARS`, :data:`MAX_RENDERED_CHARS`).
"""

from __future__ import annotations

import ast
import functools
import math
import re
import threading
import types
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

import pybars
from pybars._compiler import (
    Scope,
    _blockHelperMissing,
    _each,
    _helperMissing,
    _if,
    _unless,
    ensure_scope,
    strlist,
)

__all__ = [
    "MAX_RENDERED_CHARS",
    "MAX_TAG_CHARS",
    "MAX_TEMPLATE_CHARS",
    "TemplateError",
    "js_number",
    "render",
    "show",
]

#: one template field: Gmail clips HTML past 102 KB, and pybars' parser (pure-Python
#: OMeta) needs about 1 s per 100,000 characters of plain text
MAX_TEMPLATE_CHARS = 128 * 1024
#: characters inside ``{{ }}`` in one template field: parsing costs 0.1–0.5 ms each
#: (measured), so this bounds a hostile template's parse to a few seconds
MAX_TAG_CHARS = 12_000
#: one rendered part (subject, text, html, an attachment field)
MAX_RENDERED_CHARS = 1024 * 1024
_RENDER_WORK = 8 * MAX_RENDERED_CHARS  #: characters produced, summed over nested blocks
_CALL_WORK = 64  #: what one block or partial call costs on top of its output


def render(
    source: str,
    context: object,
    partials: Mapping[str, str],
    *,
    escape: bool,
    strict: bool,
) -> str:
    """``source`` rendered with ``context`` and the partials' sources, within the work and
    output bounds: :class:`TemplateError` saying why not."""
    budget = _BUDGET.set(_Budget(_RENDER_WORK))
    try:
        render = _compiled(source, escape, strict)
        out = render(context, partials=_Partials(partials, escape, strict))
    except TemplateError:
        raise
    except RecursionError:
        raise TemplateError("blocks or partials nest too deeply") from None
    except Exception as exc:  # pybars' own errors and anything a template provokes in it
        raise TemplateError(_error(exc)) from None
    finally:
        _BUDGET.reset(budget)
    if len(out) > MAX_RENDERED_CHARS:
        raise TemplateError(
            f"renders to {len(out)} characters, over the limit of {MAX_RENDERED_CHARS}"
        )
    return str(out)


def show(value: str, limit: int = 60) -> str:
    """``value`` quoted for a message, cut to ``limit`` characters."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _error(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "…"


# --- the pybars sandbox ---------------------------------------------------------------


class TemplateError(Exception):
    """A template that cannot be compiled or rendered safely, and why."""


class _Budget:
    """Work left for one render: every block or partial call and every character it
    produces is spent, so loops over loops and partials calling partials end early."""

    def __init__(self, work: int) -> None:
        self.left = work

    def spend(self, amount: int) -> None:
        self.left -= amount
        if self.left < 0:
            raise TemplateError("the template does too much work (blocks or partials repeat)")


_BUDGET: ContextVar[_Budget] = ContextVar("mailgate_template_budget")
_COMPILER = pybars.Compiler()
#: Held while a template is generated, parsed and compiled. pybars' code builder is a
#: class attribute shared by every Compiler, and CPython 3.11 keeps the AST converter's
#: recursion counter per interpreter, not per thread: two threads converting ASTs at once
#: can fail with "AST constructor recursion depth mismatch".
_COMPILE_LOCK = threading.Lock()

#: Handlebars 4's escapeExpression
_ESCAPES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "'": "&#x27;",
    "`": "&#x60;",
    "=": "&#x3D;",
}
_ESCAPE = re.compile("[&<>\"'`=]")

#: names, block symbols, path segments: they land inside quoted Python literals
_SAFE_NAME = re.compile(r"[^'\"\\\r\n\x00]*")
#: a string parameter keeps its quotes; a backslash could end it early
_SAFE_STRING = re.compile(r"[^\\\r\n\x00]*")

#: standalone block/comment lines (pybars' rules) without nested unbounded repeats
_STANDALONE = re.compile(
    r"(?<=\n)(?>[ \t]*+\{\{(?:#[^{}]++|/[^{}]++|![^{}]++|else|else if [^{}]++)\}\}[ \t]*+)++\r?\n"
    r"|^(?>[ \t]*+\{\{(?:#[^{}]++|![^{}]++)\}\}[ \t]*+)++\r?\n"
    r"|\r?\n(?>[ \t]*+\{\{(?:/[^{}]++|![^{}]++)\}\}[ \t]*+)++$"
)
_TIDY = re.compile(r"(?<=\{\{)~|~(?=\}\})|(?<=\}\})[ \t]+(?=\{\{)")
_TRIM_AFTER = re.compile(r"~\}\}\s*+")
_TRIM_BEFORE_REVERSED = re.compile(r"~\{\{\s*+")  # "\s*{{~" matched on the reversed text

_CODE_NAMES = frozenset(
    {
        "PybarsError", "Scope", "_helpers", "_pybars_", "called", "context", "dict",
        "ensure_scope", "hasattr", "helper", "helpers", "inner", "len", "options",
        "overrides", "partial", "partialName", "partials", "prepare", "problems", "pybars",
        "resolve", "resolve_subexpr", "result", "root", "scope", "str", "strlist", "this",
        "value",
    }
)  # fmt: skip
_CODE_ATTRIBUTES = frozenset(
    {"PybarsError", "__version__", "append", "get", "grow", "join", "replace", "update"}
)
_CODE_NODES = (
    ast.Module, ast.FunctionDef, ast.arguments, ast.arg, ast.Return, ast.Assign, ast.Expr,
    ast.If, ast.Raise, ast.Compare, ast.Eq, ast.NotEq, ast.Is, ast.IsNot, ast.In, ast.NotIn,
    ast.BoolOp, ast.And, ast.Or, ast.Call, ast.keyword, ast.Name, ast.Load, ast.Store,
    ast.Attribute, ast.Constant, ast.Dict, ast.List, ast.Subscript, ast.BinOp, ast.Mod,
    ast.Lambda,
)  # fmt: skip
_CODE_MODULES = frozenset({"pybars", "pybars._compiler", "functools"})
_BLOCK_NAME = re.compile(r"render|block_\d+")


def _compiled(source: str, escape: bool, strict: bool) -> Callable[..., Any]:
    """The render function of ``source``: parsed, checked, generated, checked again, and
    run in a namespace of its own with four builtins. Failures are remembered too: a
    broken template named by many documents is parsed once, not once per document."""
    compiled = _compile(source, escape, strict)
    if isinstance(compiled, str):
        raise TemplateError(compiled)
    return compiled


@functools.lru_cache(maxsize=128)
def _compile(source: str, escape: bool, strict: bool) -> Callable[..., Any] | str:
    """The render function, or why there is none."""
    try:
        return _build(source, escape, strict)
    except TemplateError as exc:
        return str(exc)
    except RecursionError:
        return "blocks nest too deeply"


def _build(source: str, escape: bool, strict: bool) -> Callable[..., Any]:
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"{len(source)} characters, over the limit of {MAX_TEMPLATE_CHARS}")
    tags = sum(len(t) for t in re.findall(r"\{\{[^}]*", source))
    if tags > MAX_TAG_CHARS:
        raise TemplateError(
            f"{tags} characters inside {{{{ }}}}, over the limit of {MAX_TAG_CHARS}"
        )
    with _COMPILE_LOCK:
        code = _generate(_whitespace_control(source))
        try:
            body = _checked_code(ast.parse(code))
            program = compile(
                ast.Module(body=body, type_ignores=[]), "<mailgate template>", "exec"
            )
        except (SyntaxError, ValueError) as exc:
            raise TemplateError(f"could not be compiled safely ({exc})") from None
    namespace = _namespace(escape, strict)
    exec(program, namespace)  # noqa: S102 - checked against an allowlist, no builtins beyond four
    render: Callable[..., Any] = namespace["render"]
    return render


def _whitespace_control(source: str) -> str:
    """pybars' ``Compiler.whitespace_control`` (``~`` marks, standalone block lines), in
    passes that cannot backtrack: its single regex takes exponential time on a line of
    block tags separated by spaces that does not end in a newline."""
    text = _STANDALONE.sub(lambda m: _TIDY.sub("", m.group(0).strip()), source)
    text = _TRIM_AFTER.sub("}}", text)
    return _TRIM_BEFORE_REVERSED.sub("{{", text[::-1])[::-1]


def _generate(text: str) -> str:
    """pybars' ``Compiler._generate_code`` with the parse tree checked in between. pybars
    judges a parse complete by its furthest failure, which lets an unclosed block drop
    the rest of the template in silence; where the parser stopped is what counts here."""
    parser = _COMPILER._handlebars(text)
    tree, _ = parser.apply("template")
    position: int = parser.input.position
    if position < len(text):
        line = text.count("\n", 0, position) + 1
        raise TemplateError(f"syntax error on line {line} near {show(text[position:], 30)}")
    _check_tree(tree)
    _COMPILER._compiler.globals["builder"]._reset()
    code: str = _COMPILER._compiler(tree).apply("compile")[0].full_code
    return code


def _check_tree(tree: object) -> None:
    """Every name and string parameter pybars will paste into Python source must stay
    inside its quotes; literal text is pasted with ``repr`` and needs no check."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if not _SAFE_NAME.fullmatch(node):
                raise TemplateError(f"{show(node, 30)}: quotes, backslashes and line breaks"
                                     " are not allowed in names")  # fmt: skip
        elif isinstance(node, list | tuple) and node:
            head = node[0]
            if head in ("literal", "newline", "whitespace"):
                continue
            if head == "literalparam":
                if isinstance(node[1], str) and not _SAFE_STRING.fullmatch(node[1]):
                    raise TemplateError("backslashes and line breaks are not allowed in strings")
                continue
            stack.extend(node[1:3] if head == "rawblock" else node)  # raw text: repr'd
        elif not (node is None or isinstance(node, bool | int | float | list | tuple)):
            raise TemplateError("unexpected template element")


def _checked_code(module: ast.Module) -> list[ast.stmt]:
    """The generated module without its imports (the namespace provides those names),
    refused if it holds anything pybars does not generate."""
    body: list[ast.stmt] = []
    for stmt in module.body:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            names = {a.name for a in stmt.names} if isinstance(stmt, ast.Import) else {stmt.module}
            if not names <= _CODE_MODULES:
                raise TemplateError("could not be compiled safely (an unexpected import)")
        elif isinstance(stmt, ast.FunctionDef | ast.If):
            body.append(stmt)
        else:
            raise TemplateError("could not be compiled safely (an unexpected statement)")
    for node in ast.walk(ast.Module(body=body, type_ignores=[])):
        if not isinstance(node, _CODE_NODES) or not _allowed(node):
            raise TemplateError(f"could not be compiled safely ({type(node).__name__})")
    return body


def _allowed(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return node.id in _CODE_NAMES or bool(_BLOCK_NAME.fullmatch(node.id))
    if isinstance(node, ast.Attribute):
        return node.attr in _CODE_ATTRIBUTES
    if isinstance(node, ast.FunctionDef):
        return not node.decorator_list and bool(_BLOCK_NAME.fullmatch(node.name))
    return True


def _namespace(escape: bool, strict: bool) -> dict[str, Any]:
    """What generated code can reach: pybars' scope and string types, the safe helpers,
    and lookup, subexpression, block and output functions of this module."""
    return {
        "__builtins__": {"dict": dict, "hasattr": hasattr, "len": len, "str": str},
        "pybars": types.SimpleNamespace(
            __version__=pybars.__version__, PybarsError=pybars.PybarsError
        ),
        "PybarsError": pybars.PybarsError,
        "Scope": Scope,
        "strlist": strlist,
        "ensure_scope": ensure_scope,
        "escape": _escape,
        "_pybars_": {"helpers": _HELPERS},
        "resolve": _resolver(strict),
        "resolve_subexpr": _subexpression,
        "prepare": _preparer(escape),
        "partial": _charged_block,
    }


class _Partials(Mapping[str, Callable[..., Any]]):
    """Partials compiled when first used, each call charged to the render's budget."""

    def __init__(self, sources: Mapping[str, str], escape: bool, strict: bool) -> None:
        self.sources, self.escape, self.strict = sources, escape, strict

    def __getitem__(self, name: str) -> Callable[..., Any]:
        try:
            render = _compiled(self.sources[name], self.escape, self.strict)
        except TemplateError as exc:
            raise TemplateError(f"partial {show(name)}: {exc}") from None
        return functools.partial(_charged_call, render)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.sources

    def __iter__(self) -> Iterator[str]:
        return iter(self.sources)

    def __len__(self) -> int:
        return len(self.sources)


def _charged_call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    budget = _BUDGET.get()
    budget.spend(_CALL_WORK)
    out = function(*args, **kwargs)
    budget.spend(sum(map(len, out)) if isinstance(out, list) else len(out or ""))
    return out


def _charged_block(function: Callable[..., Any], **kwargs: Any) -> Callable[[Any], Any]:
    """Stands in for ``functools.partial`` in generated code, which uses it only to
    hand block bodies to helpers."""
    return lambda this: _charged_call(function, this, **kwargs)


def _member(value: object, name: str) -> object:
    """``value.name`` as Handlebars data lookup: map keys, list items and ``length``,
    and a scope's ``@`` variables; never a Python attribute."""
    if isinstance(value, Scope):
        special = {"@root": value.root, "@_parent": value.parent, "@index": value.index,
                   "@key": value.key, "@first": value.first, "@last": value.last}  # fmt: skip
        if special.get(name) is not None:
            return special[name]
        if name == "this":
            return value.context
        if value.overrides and name in value.overrides:
            return value.overrides[name]
        return _member(value.context, name)
    if isinstance(value, dict):
        return value.get(name)
    if isinstance(value, list | str) and name == "length":
        return len(value)
    if isinstance(value, list) and name.isascii() and name.isdigit() and len(name) < 10:
        index = int(name)
        return value[index] if index < len(value) else None
    return None


def _resolver(strict: bool) -> Callable[..., object]:
    """pybars' ``resolve`` over :func:`_member`. Not strict, a missing name is nothing
    (Handlebars' default); strict, pybars raises for it."""

    def resolve(context: object, problems: list[str], *segments: str) -> object:
        if segments == ("",) and isinstance(context, Scope):
            return context.context
        value, carry = context, False
        for segment in segments:
            if value is None:
                break
            if carry:
                segment, carry = "@" + segment, False
            if segment.startswith("@@"):
                segment, carry = segment[1:], True
            if segment:
                value = _member(value, segment)
        if value is None and strict:
            problems.extend(segments)
        return value

    return resolve


def _subexpression(
    helpers: Mapping[str, Any], name: str, context: object, *args: Any, **kw: Any
) -> Any:
    if name not in helpers:
        raise TemplateError(f"{show(name)} is not a helper")
    return helpers[name](context, *args, **kw)


def _preparer(escape: bool) -> Callable[[object, bool], object]:
    def prepare(value: object, should_escape: bool) -> object:
        if type(value) is strlist:  # a block's output: already charged and escaped
            return value
        text = _display(value)
        _BUDGET.get().spend(len(text))
        return _escape(text) if escape and should_escape else text

    return prepare


def _escape(text: str) -> str:
    return _ESCAPE.sub(lambda m: _ESCAPES[m.group()], text)


def _display(value: object) -> str:
    """A value as JavaScript's ``String()`` shows it (the text handlebars.js writes)."""
    while isinstance(value, Scope):
        value = value.context
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return js_number(value)
    if isinstance(value, list):
        return ",".join(_display(v) for v in value)
    return "[object Object]" if isinstance(value, dict) else ""


def js_number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)


def _each_helper(this: object, options: Mapping[str, Any], context: object = None) -> object:
    """``each`` over a list or a map only (pybars would walk a string's characters)."""
    if not isinstance(context, list | dict):
        return options["inverse"](this)
    return _each(this, options, context)


def _with_helper(this: object, options: Mapping[str, Any], context: object = None) -> object:
    """``with`` as in Handlebars 4: the block sees the outer scope as ``../`` (pybars'
    makes it the value itself), and an empty value renders ``{{else}}``."""
    if (not context and context != 0) or context == []:
        return options["inverse"](this)
    return options["fn"](Scope(context, this, options["root"]))


def _lookup_helper(this: object, context: object, key: object = None) -> object:
    if isinstance(key, int) and not isinstance(key, bool):
        key = str(key)
    return _member(context, key) if isinstance(key, str) else None


_HELPERS: dict[str, Any] = {
    "blockHelperMissing": _blockHelperMissing,
    "helperMissing": _helperMissing,
    "each": _each_helper,
    "if": _if,
    "unless": _unless,
    "with": _with_helper,
    "lookup": _lookup_helper,
    "log": lambda this, *args, **kwargs: None,
}
