"""The API reference's parameter rows agree with the signatures.

The API pages are rendered by mkdocstrings from the numpydoc ``Parameters`` sections.
A row that names several parameters (``a, b : float``) is rendered with the type and
default of one of them for all, and a default written in a docstring drifts when the
signature changes. For every public callable of the package's public namespaces (their
``__all__``), and the public methods of its public classes, this checks that

* every documented parameter is in the signature;
* no row names more than one parameter;
* where a row states a default (``default X``, ``default: X``, ``defaults to X``,
  ``X (default)``), it is the signature's default;

and, for the ``Attributes`` sections of the public classes (rendered the same way),
that each row names one attribute of the class.

A stated default that is prose (``default: a tenth of num_warmup``) is not compared;
one that reads as a Python literal or a name is. ``numpydoc`` is not a dependency, so
the section is parsed here (the numpydoc layout: a header row at the section's indent,
``name : type``, then its indented description).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import types

import pytest

SECTIONS = ("Parameters", "Other Parameters")
_MISSING = object()


# ---------------------------------------------------------------------------
# Collecting the public callables
# ---------------------------------------------------------------------------


def _namespaces():
    """The package and every sub-namespace listed in its ``__all__``."""
    root = importlib.import_module("numpyro_almc")
    names = ["numpyro_almc"]
    names += [
        f"numpyro_almc.{n}"
        for n in root.__all__
        if isinstance(getattr(root, n), types.ModuleType)
    ]
    names.append("numpyro_almc.models")  # extra ``[nn]``: skipped when missing
    out = []
    for name in names:
        try:
            out.append(importlib.import_module(name))
        except ImportError:
            continue
    return out


def _own_methods(cls):
    """Public functions defined in ``cls`` itself (not inherited)."""
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, staticmethod | classmethod):
            member = member.__func__
        if inspect.isfunction(member):
            yield name, member


def _public_callables():
    seen = {}
    for module in _namespaces():
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if isinstance(obj, types.ModuleType) or not callable(obj):
                continue
            if id(obj) in seen:
                continue
            label = f"{module.__name__}.{name}"
            seen[id(obj)] = (label, obj)
            if inspect.isclass(obj) and obj.__module__.startswith("numpyro_almc"):
                for meth_name, meth in _own_methods(obj):
                    if id(meth) not in seen:
                        seen[id(meth)] = (f"{label}.{meth_name}", meth)
    return sorted(seen.values(), key=lambda item: item[0])


# ---------------------------------------------------------------------------
# A small numpydoc ``Parameters`` parser
# ---------------------------------------------------------------------------


def _own_doc(obj) -> str:
    doc = vars(obj).get("__doc__") if inspect.isclass(obj) else obj.__doc__
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def _docstrings(obj) -> list[str]:
    """The docstring, and for a class its own ``__init__``'s (merged on the site)."""
    docs = [_own_doc(obj)]
    if inspect.isclass(obj) and "__init__" in vars(obj):
        docs.append(_own_doc(vars(obj)["__init__"]))
    return [d for d in docs if d]


def _is_underline(line: str) -> bool:
    s = line.strip()
    return len(s) >= 3 and set(s) == {"-"}


def parameter_rows(
    doc: str, sections: tuple[str, ...] = SECTIONS
) -> list[tuple[list[str], str, str]]:
    """``(names, type, description)`` for each row of the parameter sections."""
    lines = doc.splitlines()
    rows = []
    i = 0
    while i < len(lines) - 1:
        if lines[i].strip() in sections and _is_underline(lines[i + 1]):
            j = i + 2
            body = []
            while j < len(lines):
                if (
                    j + 1 < len(lines)
                    and lines[j].strip()
                    and _is_underline(lines[j + 1])
                ):
                    break
                body.append(lines[j])
                j += 1
            rows += _rows(body)
            i = j
        else:
            i += 1
    return rows


def _rows(body: list[str]) -> list[tuple[list[str], str, str]]:
    filled = [ln for ln in body if ln.strip()]
    if not filled:
        return []
    base = min(len(ln) - len(ln.lstrip()) for ln in filled)
    rows = []
    for line in body:
        if not line.strip():
            continue
        if len(line) - len(line.lstrip()) == base:
            head = line.strip()
            names, sep, typ = head.partition(" :")
            if not sep and head.endswith(":"):
                names = head[:-1]
            names = [n.strip().strip("`").lstrip("*") for n in names.split(",")]
            rows.append(([n for n in names if n], typ.strip(), []))
        elif rows:
            rows[-1][2].append(line.strip())
    return [(names, typ, " ".join(desc)) for names, typ, desc in rows]


# A stated default: ``default X``, ``default: X``, ``default=X``, ``defaults to X``
# (X a literal in double backticks or one token), ``X (default)`` or ``X by default``.
_VALUE = r"(``.+?``|[^\s,;()]+)"
_DEFAULT_AFTER = re.compile(r"\bdefaults?(?:\s+to|\s*[:=]|\s)\s*" + _VALUE)
_DEFAULT_BEFORE = re.compile(_VALUE + r"\s+(?:\(default\)|by default)")


def stated_defaults(typ: str, description: str) -> list[str]:
    """The defaults a row states, as written (backticks removed)."""
    found = []
    for text in (typ, description):
        for pattern in (_DEFAULT_AFTER, _DEFAULT_BEFORE):
            found += [m.group(1) for m in pattern.finditer(text)]
    return [v.strip("`").rstrip(".") for v in found]


def _parse_value(text: str):
    """The value a stated default names: a literal, ``("name", word)`` for a bare
    name (compared with a string, a function's name or the repr of the default),
    or ``_MISSING`` when it is prose."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    if re.fullmatch(r"[A-Za-z_][\w.]*", text):
        return ("name", text.rsplit(".", 1)[-1])
    return _MISSING


def _agrees(stated, default) -> bool | None:
    """Whether a stated default is the signature's; None when it cannot be told."""
    if isinstance(stated, tuple) and len(stated) == 2 and stated[0] == "name":
        word = stated[1]
        if isinstance(default, str):
            return word == default
        if hasattr(default, "__name__"):
            return word == default.__name__
        # A word against a number or None: ``inf`` is a value, ``all`` is prose.
        return True if word == repr(default) else None
    if isinstance(stated, bool) or isinstance(default, bool):
        return stated is default
    try:
        return bool(stated == default)
    except Exception:
        return False


def _signature(obj):
    sig = inspect.signature(obj)
    params = dict(sig.parameters)
    if inspect.isfunction(obj) and "." in obj.__qualname__:
        first = next(iter(params), None)
        if first in ("self", "cls"):
            params.pop(first)
    return params


# ---------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------

_CALLABLES = _public_callables()
_DOCUMENTED = [
    (label, obj)
    for label, obj in _CALLABLES
    if any(parameter_rows(d) for d in _docstrings(obj))
]


def test_the_parser_reads_numpydoc_rows():
    doc = inspect.cleandoc(
        """Summary.

        Parameters
        ----------
        a, b : float, default 0.5
            Two at once.
        c
            ``"auto"`` (default) or ``None``.

        Returns
        -------
        x : int
            Not a parameter.
        """
    )
    rows = parameter_rows(doc)
    assert [r[0] for r in rows] == [["a", "b"], ["c"]]
    assert stated_defaults(rows[0][1], rows[0][2]) == ["0.5"]
    assert stated_defaults(rows[1][1], rows[1][2]) == ['"auto"']
    assert stated_defaults("int, optional", "Steps (defaults to ``8``).") == ["8"]
    assert _agrees(_parse_value("0.02"), 0.02)
    assert not _agrees(_parse_value("0.5"), 0.02)
    assert _parse_value("a tenth of") is _MISSING


def test_there_are_documented_callables():
    # The collection itself must not silently come back empty.
    assert len(_DOCUMENTED) > 50


@pytest.mark.parametrize(
    "label, obj", _DOCUMENTED, ids=[label for label, _ in _DOCUMENTED]
)
def test_parameter_rows_match_the_signature(label, obj):
    params = _signature(obj)
    problems = []
    for doc in _docstrings(obj):
        for names, typ, description in parameter_rows(doc):
            row = ", ".join(names)
            if len(names) > 1:
                problems.append(f"row {row!r} names {len(names)} parameters")
            for name in names:
                if name not in params:
                    problems.append(f"{name!r} is documented but not in the signature")
            if len(names) != 1 or names[0] not in params:
                continue
            default = params[names[0]].default
            for text in stated_defaults(typ, description):
                stated = _parse_value(text)
                if stated is _MISSING:
                    continue
                if default is inspect.Parameter.empty:
                    problems.append(f"{row!r} states default {text}; it has none")
                elif _agrees(stated, default) is False:
                    problems.append(
                        f"{row!r} states default {text}; the signature's is {default!r}"
                    )
    assert not problems, f"{label}: " + "; ".join(problems)


_CLASSES_WITH_ATTRIBUTES = [
    (label, obj)
    for label, obj in _CALLABLES
    if inspect.isclass(obj) and parameter_rows(_own_doc(obj), ("Attributes",))
]


def _has_attribute(cls, name: str) -> bool:
    return hasattr(cls, name) or any(
        name in getattr(klass, "__annotations__", {}) for klass in cls.__mro__
    )


@pytest.mark.parametrize(
    "label, cls",
    _CLASSES_WITH_ATTRIBUTES,
    ids=[label for label, _ in _CLASSES_WITH_ATTRIBUTES],
)
def test_attribute_rows_name_one_attribute(label, cls):
    problems = []
    for names, _, _ in parameter_rows(_own_doc(cls), ("Attributes",)):
        if len(names) > 1:
            problems.append(f"row {', '.join(names)!r} names {len(names)} attributes")
        problems += [
            f"{name!r} is documented but not an attribute"
            for name in names
            if not _has_attribute(cls, name)
        ]
    assert not problems, f"{label}: " + "; ".join(problems)
