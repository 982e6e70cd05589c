"""A small subset of APIM policy expressions (C# in `@(...)` or `@{ return ...; }`), evaluated in Python.

Enough for what the app generates: counter keys such as `@(context.Subscription.Id)` and increment
conditions such as `@(context.Response.StatusCode < 301 || context.Response.StatusCode == 304)`.

Supported: integer, string ("..." with C# escapes), `true`/`false`/`null` literals; member access on
`context` (see `Context.as_tree`); `.ToString()`, `.ToLower()`, `.ToUpper()` (and the `Invariant`
forms); unary `!` and `-`; `* / %`, `+ -` (`+` concatenates when either side is a string, as in C#),
`< <= > >=`, `== !=`, `&&`, `||`, `?:` and parentheses, with C# precedence. Anything else raises
ExpressionError, which the gateway answers with 500 (APIM compiles expressions when a policy is
saved; the emulator cannot, so an expression it does not understand fails at call time instead).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>\d+)
    | (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>\|\||&&|==|!=|<=|>=|[-+*/%<>!().?:,])
    )""",
    re.VERBOSE,
)


def _to_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"  # C#'s bool.ToString()
    return str(value)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", '"': '"', "\\": "\\", "'": "'"}
_STRING_METHODS: dict[str, Callable[[Any], str]] = {
    "ToString": _to_string,
    "ToLower": lambda v: _to_string(v).lower(),
    "ToLowerInvariant": lambda v: _to_string(v).lower(),
    "ToUpper": lambda v: _to_string(v).upper(),
    "ToUpperInvariant": lambda v: _to_string(v).upper(),
}
_BINARY_LEVELS: tuple[tuple[str, ...], ...] = (
    ("||",),
    ("&&",),
    ("==", "!="),
    ("<", "<=", ">", ">="),
    ("+", "-"),
    ("*", "/", "%"),
)


class ExpressionError(ValueError):
    """A policy expression the emulator cannot parse or evaluate (APIM would answer 500 at run time)."""


@dataclass
class Context:
    """What `context.*` exposes to the emulator's expressions; None members are C# nulls."""

    subscription_id: str | None = None
    subscription_key: str | None = None
    subscription_name: str | None = None
    user_id: str | None = None
    user_email: str | None = None
    product_id: str | None = None
    product_name: str | None = None
    api_id: str | None = None
    api_name: str | None = None
    api_path: str | None = None
    ip: str = "127.0.0.1"
    method: str = "GET"
    url_path: str = "/"
    status_code: int | None = None  # set once the response is known
    extra: dict[str, Any] = field(default_factory=dict)

    def as_tree(self) -> dict[str, Any]:
        def obj(**members: Any) -> dict[str, Any] | None:
            return None if all(v is None for v in members.values()) else members

        tree: dict[str, Any] = {
            "Subscription": obj(Id=self.subscription_id, Key=self.subscription_key, Name=self.subscription_name),
            "User": obj(Id=self.user_id, Email=self.user_email),
            "Product": obj(Id=self.product_id, Name=self.product_name),
            "Api": obj(Id=self.api_id, Name=self.api_name, Path=self.api_path),
            "Request": {"IpAddress": self.ip, "Method": self.method, "Url": {"Path": self.url_path}},
            "Response": None if self.status_code is None else {"StatusCode": self.status_code},
        }
        tree.update(self.extra)
        return tree


@dataclass(frozen=True)
class Expression:
    """A parsed expression; `evaluate` runs it against a Context."""

    source: str
    tree: Any

    def evaluate(self, context: Context) -> Any:
        return _Evaluator(self.source, context.as_tree()).run(self.tree)


def is_expression(text: str) -> bool:
    return text.strip().startswith("@")


def parse(text: str) -> Expression:
    """Parse `@(...)` or `@{ return ...; }`; ExpressionError if the emulator cannot read it."""
    source = text.strip()
    if source.startswith("@(") and source.endswith(")"):
        body = source[2:-1]
    elif source.startswith("@{") and source.endswith("}"):
        match = re.fullmatch(r"\s*return\s+(.*?);?\s*", source[2:-1], re.DOTALL)
        if match is None:
            raise ExpressionError(f"the emulator evaluates only single `return ...;` statement blocks, not {text!r}")
        body = match.group(1)
    else:
        raise ExpressionError(f"{text!r} is not a policy expression (@(...) or @{{...}})")
    return Expression(source, _Parser(body, source).parse())


def evaluate_key(text: str, context: Context) -> str:
    """A counter key: a literal, or the string value of an expression."""
    if not is_expression(text):
        return text
    return _to_string(parse(text).evaluate(context))


def evaluate_condition(text: str, context: Context) -> bool:
    value = parse(text).evaluate(context) if is_expression(text) else _literal_bool(text)
    if not isinstance(value, bool):
        raise ExpressionError(f"the condition {text!r} is not a Boolean expression (it gave {value!r})")
    return value


def _literal_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise ExpressionError(f"{text!r} is neither true, false nor a policy expression")


class _Parser:
    """Recursive descent over C# precedence levels; the tree is nested tuples."""

    def __init__(self, body: str, source: str) -> None:
        self.source = source
        self.tokens = self._tokens(body)
        self.pos = 0

    def _tokens(self, body: str) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        pos = 0
        while body[pos:].strip():
            match = _TOKEN.match(body, pos)
            if match is None:
                raise ExpressionError(f"the emulator cannot read {self.source!r} at {body[pos : pos + 15]!r}")
            pos = match.end()
            if match.group("number"):
                out.append(("lit", int(match.group("number"))))
            elif match.group("string"):
                out.append(
                    (
                        "lit",
                        re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), match.group("string")[1:-1]),
                    )
                )
            elif match.group("name"):
                name = match.group("name")
                literal = {"true": True, "false": False, "null": None}
                out.append(("lit", literal[name]) if name in literal else ("name", name))
            else:
                out.append(("op", match.group("op")))
        return out

    def _peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take_op(self, *ops: str) -> str | None:
        token = self._peek()
        if token is not None and token[0] == "op" and token[1] in ops:
            self.pos += 1
            return str(token[1])
        return None

    def _expect(self, op: str) -> None:
        if self._take_op(op) is None:
            raise ExpressionError(f"the emulator cannot read {self.source!r}: expected {op!r}")

    def parse(self) -> Any:
        tree = self._conditional()
        if self._peek() is not None:
            raise ExpressionError(f"the emulator cannot read {self.source!r}: unexpected {self._peek()[1]!r}")  # type: ignore[index]
        return tree

    def _conditional(self) -> Any:
        test = self._binary(0)
        if self._take_op("?") is None:
            return test
        yes = self._conditional()
        self._expect(":")
        return ("?:", test, yes, self._conditional())

    def _binary(self, level: int) -> Any:
        if level == len(_BINARY_LEVELS):
            return self._unary()
        left = self._binary(level + 1)
        while (op := self._take_op(*_BINARY_LEVELS[level])) is not None:
            left = (op, left, self._binary(level + 1))
        return left

    def _unary(self) -> Any:
        op = self._take_op("!", "-")
        if op is not None:
            return ("neg" if op == "-" else "!", self._unary())
        return self._postfix(self._primary())

    def _primary(self) -> Any:
        token = self._peek()
        if token is None:
            raise ExpressionError(f"the emulator cannot read {self.source!r}: it ends too early")
        self.pos += 1
        if token[0] == "lit":
            return ("lit", token[1])
        if token == ("op", "("):
            inner = self._conditional()
            self._expect(")")
            return inner
        if token == ("name", "context"):
            return ("context",)
        raise ExpressionError(f"the emulator does not know {token[1]!r} in {self.source!r}")

    def _postfix(self, tree: Any) -> Any:
        while self._take_op(".") is not None:
            token = self._peek()
            if token is None or token[0] != "name":
                raise ExpressionError(f"the emulator cannot read {self.source!r}: a member name must follow '.'")
            self.pos += 1
            if self._take_op("(") is not None:
                self._expect(")")
                if token[1] not in _STRING_METHODS:
                    raise ExpressionError(f"the emulator does not evaluate the method {token[1]}() in {self.source!r}")
                tree = ("call", tree, token[1])
            else:
                tree = ("member", tree, token[1])
        return tree


class _Evaluator:
    def __init__(self, source: str, context: dict[str, Any]) -> None:
        self.source = source
        self.context = context

    def fail(self, why: str) -> ExpressionError:
        return ExpressionError(f"Expression evaluation failed. {why} (in {self.source})")

    def run(self, tree: Any) -> Any:
        kind = tree[0]
        if kind == "lit":
            return tree[1]
        if kind == "context":
            return self.context
        if kind in ("member", "call"):
            return self._access(tree)
        if kind == "!":
            return not self._bool(self.run(tree[1]))
        if kind == "neg":
            return -self._int(self.run(tree[1]))
        if kind == "?:":
            return self.run(tree[2]) if self._bool(self.run(tree[1])) else self.run(tree[3])
        if kind in ("||", "&&"):
            left = self._bool(self.run(tree[1]))
            if left == (kind == "||"):  # short-circuit, as C# does
                return left
            return self._bool(self.run(tree[2]))
        return self._binary(kind, self.run(tree[1]), self.run(tree[2]))

    def _access(self, tree: Any) -> Any:
        owner = self.run(tree[1])
        name = tree[2] + ("()" if tree[0] == "call" else "")
        if owner is None:
            raise self.fail(f"Object reference not set to an instance of an object ({name}).")
        if tree[0] == "call":
            return _STRING_METHODS[tree[2]](owner)
        if not isinstance(owner, dict) or tree[2] not in owner:
            raise self.fail(f"The emulator does not provide the member {tree[2]}.")
        return owner[tree[2]]

    def _binary(self, kind: str, left: Any, right: Any) -> Any:
        if kind in ("==", "!="):
            return (left == right and type(left) is type(right)) == (kind == "==")
        if kind == "+" and (isinstance(left, str) or isinstance(right, str)):
            return _to_string(left) + _to_string(right)
        a, b = self._int(left), self._int(right)
        if kind in ("/", "%") and b == 0:
            raise self.fail("Attempted to divide by zero.")
        operations: dict[str, Callable[[], Any]] = {
            "<": lambda: a < b,
            "<=": lambda: a <= b,
            ">": lambda: a > b,
            ">=": lambda: a >= b,
            "+": lambda: a + b,
            "-": lambda: a - b,
            "*": lambda: a * b,
            "/": lambda: int(a / b),
            "%": lambda: a - b * int(a / b),  # C# truncates toward zero
        }
        return operations[kind]()

    def _bool(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(f"{value!r} is not a Boolean.")
        return value

    def _int(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{value!r} is not a number.")
        return value
