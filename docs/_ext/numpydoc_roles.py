"""Griffe extension: render the Sphinx markup of our numpydoc docstrings in MkDocs.

The docstrings follow numpydoc, which uses Sphinx roles (``:func:`run_almc```,
``:math:`\\tau```) and ``.. math::`` blocks. mkdocstrings renders docstrings as
Markdown, so this extension rewrites them before rendering:

* ``:func:`` / ``:class:`` / ``:meth:`` / ``:attr:`` / ``:mod:`` / ``:data:``
  roles become *optional* autorefs: a link when the object is documented on the
  site, plain code otherwise (no warning, so ``mkdocs build --strict`` stays
  quiet about references to JAX or to private helpers);
* ``:math:`...``` becomes ``$...$`` and ``.. math::`` blocks become ``$$`` blocks
  (``pymdownx.arithmatex``);
* numpydoc citations ``.. [1] ...`` become list items and ``[1]_`` becomes ``[1]``.

Loaded by path from ``mkdocs.yml``; it is not part of the package.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(func|class|meth|attr|mod|data|obj|exc):`(?P<text>[^`]+)`")
_MATH_ROLE = re.compile(r":math:`(?P<tex>[^`]+)`")
_MATH_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*$")
_CITATION = re.compile(r"^(?P<indent>[ \t]*)\.\. \[(?P<label>\d+)\] ", re.MULTILINE)
_CITATION_REF = re.compile(r"\[(?P<label>\d+)\]_(?!\w)")

#: Packages whose objects the site documents; a short name is looked up in each.
_PUBLIC_NAMESPACES = (
    "numpyro_almc",
    "numpyro_almc.baselines",
    "numpyro_almc.testbeds",
    "numpyro_almc.models",
)


def _math_blocks(text: str) -> str:
    """``.. math::`` + indented body -> ``$$`` fenced body at the directive's indent."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _MATH_BLOCK.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = match["indent"]
        i += 1
        body: list[str] = []
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)
        ):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            i -= 1
            body.pop()
        content = [ln for ln in body if ln.strip()]
        depth = min((len(ln) - len(ln.lstrip()) for ln in content), default=0)
        lines_tex = [f"{indent}{ln[depth:]}" for ln in content]
        tex = "\n".join(content)
        # Sphinx aligns multi-line equations itself; MathJax needs the environment.
        multiline = "&" in tex or "\\\\" in tex
        out.append(f"{indent}$$")
        if multiline:
            out.append(f"{indent}\\begin{{aligned}}")
        out.extend(lines_tex)
        if multiline:
            out.append(f"{indent}\\end{{aligned}}")
        out.append(f"{indent}$$")
    return "\n".join(out)


class NumpydocRoles(griffe.Extension):
    """Rewrite Sphinx roles and math in every docstring of the loaded package."""

    def __init__(self) -> None:
        super().__init__()
        self._public: dict[str, str] = {}

    def on_package(self, *, pkg: griffe.Module, loader: Any, **kwargs: Any) -> None:
        # Map the canonical path of every re-exported object to its public path, so
        # links point at the API page (``numpyro_almc.run_almc``), not the private
        # module (``numpyro_almc.run.driver.run_almc``).
        for namespace in _PUBLIC_NAMESPACES:
            try:
                module = (
                    pkg
                    if namespace == pkg.path
                    else loader.modules_collection[namespace]
                )
            except KeyError:
                continue
            exported = module.exports
            for name, member in module.members.items():
                if name.startswith("_") or (exported and name not in exported):
                    continue
                target = member.target_path if member.is_alias else member.path
                if not target.startswith("numpyro_almc."):
                    continue
                self._public.setdefault(target, f"{namespace}.{name}")
        self._walk(pkg, seen=set())

    def _walk(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = self._rewrite(obj.docstring.value, obj)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, seen)

    def _identifier(self, name: str, scope: griffe.Object) -> str:
        name = name.lstrip("~.").rstrip("()")
        candidates = []
        if "." in name and name.split(".")[0] in {"numpyro_almc", "jax", "numpyro"}:
            candidates.append(name)
        head, _, rest = name.partition(".")
        for obj in (scope, scope.parent, scope.module):
            if obj is None:
                continue
            try:
                resolved = obj.resolve(head)
            except Exception:  # noqa: BLE001 - griffe raises several kinds
                continue
            candidates.append(f"{resolved}.{rest}" if rest else resolved)
        candidates.extend(f"{ns}.{name}" for ns in _PUBLIC_NAMESPACES)
        public = set(self._public.values())
        for candidate in candidates:
            # The public path of the candidate or of its longest re-exported parent.
            parts = candidate.split(".")
            for cut in range(len(parts), 0, -1):
                prefix = ".".join(parts[:cut])
                tail = ".".join(parts[cut:])
                found = self._public.get(prefix)
                if found is None and prefix in public:
                    found = prefix
                if found:
                    return f"{found}.{tail}" if tail else found
        return candidates[0] if candidates else name

    def _rewrite(self, text: str, scope: griffe.Object) -> str:
        text = _math_blocks(text)
        # numpydoc citations: ``.. [1] text`` becomes a list item, ``[1]_`` plain [1].
        text = _CITATION.sub(lambda m: f"{m['indent']}* [{m['label']}] ", text)
        text = _CITATION_REF.sub(lambda m: f"[{m['label']}]", text)
        text = _MATH_ROLE.sub(lambda m: f"${m['tex'].strip()}$", text)

        def role(match: re.Match) -> str:
            raw = match["text"].strip()
            title = raw.lstrip("~")
            if raw.startswith("~"):
                title = title.rsplit(".", 1)[-1]
            identifier = self._identifier(raw, scope)
            return (
                f'<autoref identifier="{html.escape(identifier)}" optional>'
                f"<code>{html.escape(title)}</code></autoref>"
            )

        return _ROLE.sub(role, text)
