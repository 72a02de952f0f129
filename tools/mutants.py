"""The mutants of one module: small changes to its syntax tree (ast), for tools/mutate.py.

A mutant is named by its key, `path:line:col: what`, e.g.
`mailer/core/policy.py:174:11: '<=' -> '<' in `s.at <= now``; the key is what the run prints
and what tests/mutation-equivalents.txt lists.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ROOT", "Mutant", "mutants_of", "mutated_source", "path_of"]

ROOT = Path(__file__).resolve().parent.parent

_COMPARE_SWAPS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
    ast.In: ast.NotIn, ast.NotIn: ast.In,
}  # fmt: skip
_BINOP_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
    ast.Pow: ast.Mult, ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv,
}  # fmt: skip
_SYMBOL = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
    ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in", ast.Add: "+",
    ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.FloorDiv: "//", ast.Mod: "%",
    ast.And: "and", ast.Or: "or",
}  # fmt: skip
_CALL_SWAPS = {"min": "max", "max": "min", "any": "all", "all": "any"}
_CALLS_REMOVED = ("sorted", "reversed")


@dataclass(frozen=True, slots=True)
class Mutant:
    module: str
    path: str  # relative to ROOT
    index: int  # position in the walk of the module's tree
    line: int
    col: int
    what: str  # e.g. "'<=' -> '<' in `s.at <= now`"

    @property
    def key(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.what}"


Apply = Callable[[ast.AST, ast.AST], None]  # (node, parent) -> mutate the tree in place


def _replace_child(parent: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for name, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, name, new)
            return
        if isinstance(value, list):
            for i, item in enumerate(value):
                if item is old:
                    value[i] = new
                    return
    raise LookupError("child not found in its parent")


def _skipped_nodes(tree: ast.Module) -> set[int]:
    """Ids of nodes never mutated: docstrings, annotations, decorators, imports, `__all__`."""
    skipped: set[int] = set()

    def skip(node: ast.AST | None) -> None:
        if node is not None:
            skipped.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            first = body[0].value
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                skip(body[0])
        if isinstance(node, ast.arg | ast.AnnAssign):
            skip(node.annotation)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            skip(node.returns)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for decorator in node.decorator_list:
                skip(decorator)
        if isinstance(node, ast.Import | ast.ImportFrom):
            skip(node)
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            skip(node)
        if isinstance(node, ast.Set | ast.List) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts
        ):
            skip(node)  # a table of words (role local parts): a test could only copy it
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            skip(node)  # `...` in a Protocol
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            if node.value.id in {"dict", "list", "tuple", "set", "frozenset", "Callable"}:
                skip(node)  # a type expression at run time (an alias), not a value
    return skipped


def _mutations(node: ast.AST, parent: ast.AST, source: str) -> Iterator[tuple[str, Apply]]:
    """Every mutation of `node` as (description, how to apply it to a fresh copy)."""
    text = ast.get_source_segment(source, node) or ast.unparse(node)
    snippet = " ".join(text.split())
    if len(snippet) > 60:
        snippet = snippet[:57] + "..."

    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            swap = _COMPARE_SWAPS.get(type(op))
            if swap is not None:

                def apply(n: ast.AST, _p: ast.AST, i: int = i, swap: type = swap) -> None:
                    assert isinstance(n, ast.Compare)
                    n.ops[i] = swap()

                yield f"{_SYMBOL[type(op)]!r} -> {_SYMBOL[swap]!r} in `{snippet}`", apply
    elif isinstance(node, ast.BoolOp):
        other = ast.Or if isinstance(node.op, ast.And) else ast.And

        def apply_bool(n: ast.AST, _p: ast.AST, other: type = other) -> None:
            assert isinstance(n, ast.BoolOp)
            n.op = other()

        yield f"{_SYMBOL[type(node.op)]!r} -> {_SYMBOL[other]!r} in `{snippet}`", apply_bool
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAPS:
        if not _is_string_concat(node):
            swap = _BINOP_SWAPS[type(node.op)]

            def apply_bin(n: ast.AST, _p: ast.AST, swap: type = swap) -> None:
                assert isinstance(n, ast.BinOp)
                n.op = swap()

            yield f"{_SYMBOL[type(node.op)]!r} -> {_SYMBOL[swap]!r} in `{snippet}`", apply_bin
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield f"`not` dropped in `{snippet}`", lambda n, p: _replace_child(p, n, n.operand)  # type: ignore[attr-defined]
    elif isinstance(node, ast.Constant):
        yield from _constant_mutations(node, snippet)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name = node.func.id
        if name in _CALL_SWAPS:
            other_name = _CALL_SWAPS[name]

            def apply_call(n: ast.AST, _p: ast.AST, other_name: str = other_name) -> None:
                assert isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                n.func.id = other_name

            yield f"{name}() -> {other_name}() in `{snippet}`", apply_call
        elif name in _CALLS_REMOVED and node.args:
            yield (
                f"{name}() removed in `{snippet}`",
                lambda n, p: _replace_child(p, n, n.args[0]),  # type: ignore[attr-defined]
            )
    if isinstance(node, ast.Expr | ast.If | ast.Raise | ast.Return | ast.AugAssign):
        yield f"statement dropped: `{snippet}`", lambda n, p: _replace_child(p, n, ast.Pass())


def _is_string_concat(node: ast.BinOp) -> bool:
    return any(
        isinstance(side, ast.Constant)
        and isinstance(side.value, str | bytes)
        or isinstance(side, ast.JoinedStr)
        for side in (node.left, node.right)
    )


def _constant_mutations(node: ast.Constant, snippet: str) -> Iterator[tuple[str, Apply]]:
    value = node.value

    def set_to(new: object) -> Apply:
        def apply(n: ast.AST, _p: ast.AST) -> None:
            assert isinstance(n, ast.Constant)
            n.value = new

        return apply

    if isinstance(value, bool):
        yield f"{value} -> {not value}", set_to(not value)
    elif isinstance(value, int | float):
        yield f"{value!r} -> {value + 1!r} in `{snippet}`", set_to(value + 1)
        yield f"{value!r} -> {value - 1!r} in `{snippet}`", set_to(value - 1)
    elif isinstance(value, str | bytes) and value:
        yield f"{snippet} -> empty", set_to(value[:0])


def mutants_of(module: str) -> list[Mutant]:
    path = path_of(module)
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    skipped = _skipped_nodes(tree)
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: list[Mutant] = []
    for index, node in enumerate(ast.walk(tree)):
        if id(node) in skipped or id(node) not in parents:
            continue
        for what, _apply in _mutations(node, parents[id(node)], source):
            line, col = getattr(node, "lineno", 0), getattr(node, "col_offset", 0)
            found.append(Mutant(module, str(path.relative_to(ROOT)), index, line, col, what))
    return found


def mutated_source(mutant: Mutant) -> str:
    """The module's source with this one mutant applied (the file itself is not changed)."""
    source = path_of(mutant.module).read_text(encoding="utf-8")
    tree = ast.parse(source)
    fresh = copy.deepcopy(tree)
    parents = {id(child): node for node in ast.walk(fresh) for child in ast.iter_child_nodes(node)}
    node = list(ast.walk(fresh))[mutant.index]
    for what, apply in _mutations(node, parents[id(node)], source):
        if what == mutant.what:
            apply(node, parents[id(node)])
            return ast.unparse(ast.fix_missing_locations(fresh))
    raise LookupError(f"mutant {mutant.key} not found")


def path_of(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")
