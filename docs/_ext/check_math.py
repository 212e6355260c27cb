"""Check the maths of a built documentation site, offline.

Usage: ``python docs/_ext/check_math.py SITE_DIR`` after ``mkdocs build``. Exits 1 and
names the page for every problem found (0 when there is none):

(a) ``remote``: a page loads a script or stylesheet from the network: a ``<script src>``
    or ``<link rel="stylesheet|preload|modulepreload">`` with an ``http(s)://`` or
    ``//`` URL. Code that only *may* load one at run time (an ``import("https://...")``
    in an inline script, an ``@import`` in a ``<style>``) is reported as a warning.
(b) ``no-mathjax``: a page with maths does not load the MathJax configuration
    (``javascripts/mathjax.js``) followed by the vendored MathJax
    (``javascripts/vendor/mathjax/tex-chtml.js``), or that file or its fonts are missing
    from the site.
(c) ``raw-$$``: a ``$$`` in the text of a page that MathJax, as configured, will not
    typeset. The configuration is read from the built ``javascripts/mathjax.js``:
    MathJax searches only the elements matching ``MATH_SELECTORS`` (arithmatex output,
    the notebooks' Markdown cells) and, inside them, skips ``<code>``, ``<pre>``, ...
    and ``mathjax_ignore``. Within those elements this script re-runs MathJax's own
    search (its FindTeX: the same delimiters, escapes, environments and brace matching,
    on the same text strings, which stop at every element boundary), so a ``$$`` counts
    as rendered only when it opens or closes, or lies inside, maths that MathJax finds.
(d) ``raw-tex``: likewise for a ``\\[``, ``\\(`` or ``\\begin{`` that will not be
    typeset (outside the searched elements, or unmatched inside them).

The pages under ``javascripts/vendor/`` (the vendored library) are not checked.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath

CONFIG_JS = "javascripts/mathjax.js"
MATHJAX_JS = "javascripts/vendor/mathjax/tex-chtml.js"
FONTS_DIR = "javascripts/vendor/mathjax/output/chtml/fonts/woff-v2"
VENDOR_DIR = "javascripts/vendor/"

# MathJax 3 defaults (options.skipHtmlTags, ignoreHtmlClass, processHtmlClass).
SKIP_TAGS = {
    "script",
    "noscript",
    "style",
    "textarea",
    "pre",
    "code",
    "annotation",
    "annotation-xml",
}
IGNORE_CLASSES = {"tex2jax_ignore", "mathjax_ignore"}
PROCESS_CLASSES = {"tex2jax_process", "mathjax_process"}
# Text that the browser never shows as page text.
HIDDEN_TAGS = {"script", "style", "template", "noscript", "textarea", "title", "head"}
VOID_TAGS = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
}
REMOTE = re.compile(r"^\s*(?:https?:)?//", re.IGNORECASE)
RUNTIME_REMOTE = re.compile(
    r"""(?:\bimport\s*\(\s*|\bfrom\s*|@import\s+(?:url\(\s*)?)["']?((?:https?:)?//[^"')\s]+)""",
    re.IGNORECASE,
)
LOADING_RELS = {"stylesheet", "preload", "modulepreload"}
RAW_TEX = re.compile(r"\$\$|\\\[|\\\(|\\begin\s*\{")


class Text(str):
    """A text node: a string that knows its line in the page."""

    line: int = 0


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)
    line: int = 0

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class TreeBuilder(HTMLParser):
    """A forgiving HTML tree builder (the pages are generated, hence well nested)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, line=self.getpos()[0])
        self.stack[-1].children.append(node)
        if tag not in VOID_TAGS:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, line=self.getpos()[0])
        self.stack[-1].children.append(node)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        text = Text(data)
        text.line = self.getpos()[0]
        self.stack[-1].children.append(text)


def iter_nodes(node: Node):
    yield node
    for child in node.children:
        if isinstance(child, Node):
            yield from iter_nodes(child)


# --- the MathJax configuration ---------------------------------------------------


@dataclass
class MathConfig:
    selectors: list[str]
    inline: list[tuple[str, str]]
    display: list[tuple[str, str]]
    escapes: bool
    environments: bool
    refs: bool

    def root_classes(self) -> set[str]:
        return {s[1:] for s in self.selectors}


def _js_array(text: str, key: str) -> list:
    """The JSON-compatible array literal after ``key`` in a small JS file."""
    m = re.search(rf"{key}\s*[:=]\s*\[", text)
    if not m:
        raise ValueError(f"{key} not found")
    start = m.end() - 1
    depth = 0
    in_str = False
    i = start
    while i < len(text):
        c = text[i]
        if in_str:
            if c == "\\":
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
            if depth == 0:
                break
        i += 1
    literal = re.sub(r",(\s*\])", r"\1", text[start : i + 1])
    return json.loads(literal)


def _js_flag(text: str, key: str, default: bool) -> bool:
    m = re.search(rf"\b{key}\s*:\s*(true|false)\b", text)
    return default if not m else m.group(1) == "true"


def read_config(path: Path) -> MathConfig:
    text = re.sub(r"^\s*//.*$", "", path.read_text(encoding="utf-8"), flags=re.M)
    selectors = _js_array(text, "MATH_SELECTORS")
    bad = [s for s in selectors if not re.fullmatch(r"\.[\w-]+", s)]
    if bad:
        raise ValueError(f"only class selectors are understood, not {bad}")
    return MathConfig(
        selectors=selectors,
        inline=[tuple(p) for p in _js_array(text, "inlineMath")],
        display=[tuple(p) for p in _js_array(text, "displayMath")],
        escapes=_js_flag(text, "processEscapes", True),
        environments=_js_flag(text, "processEnvironments", True),
        refs=_js_flag(text, "processRefs", True),
    )


# --- MathJax's FindTeX, transcribed ----------------------------------------------


class FindTeX:
    """Mirror of MathJax 3's ``FindTeX`` (ts/input/tex/FindTeX.ts)."""

    def __init__(self, cfg: MathConfig) -> None:
        parts: list[str] = []
        subparts: list[str] = []
        self.env = self.sub = 0
        i = 1
        if cfg.environments:
            parts.append(r"\\begin\s*\{([^}]*)\}")
            self.env = i
            i += 1
        if cfg.refs:
            subparts.append(r"\\(?:eq)?ref\s*\{[^}]*\}")
        if cfg.escapes:
            subparts.append(r"\\([\\$])")
        self.end: dict[str, tuple[str, re.Pattern[str]]] = {}
        starts = []
        for open_, close in [*cfg.inline, *cfg.display]:
            starts.append(re.escape(open_))
            self.end[open_] = (close, re.compile(re.escape(close) + r"|\\.|[{}]"))
        if starts:
            parts.append("|".join(sorted(starts, key=len, reverse=True)))
        if subparts:
            parts.append("(" + "|".join(subparts) + ")")
            self.sub = i
        self.start = re.compile("|".join(parts))

    @staticmethod
    def _find_end(text: str, pos: int, close: str, pattern: re.Pattern[str]):
        braces = 0
        for m in pattern.finditer(text, pos):
            token = (m.group(1) if m.re.groups else None) or m.group(0)
            if token == close and braces == 0:
                return m.end()
            if m.group(0) == "{":
                braces += 1
            elif m.group(0) == "}" and braces:
                braces -= 1
        return None

    def find(self, text: str) -> tuple[list[tuple[int, int]], list[int]]:
        """Spans of the maths (and escapes) MathJax finds, and unmatched openings."""
        found: list[tuple[int, int]] = []
        unmatched: list[int] = []
        pos = 0
        while (start := self.start.search(text, pos)) is not None:
            end = None
            if self.env and start.group(self.env) is not None:
                name = start.group(self.env)
                pattern = re.compile(r"\\end\s*(\{" + re.escape(name) + r"\})|\\.|[{}]")
                end = self._find_end(text, start.end(), "{" + name + "}", pattern)
            elif self.sub and start.group(self.sub) is not None:
                end = start.end()
            else:
                close, pattern = self.end[start.group(0)]
                end = self._find_end(text, start.end(), close, pattern)
            if end is None:
                unmatched.append(start.start())
                pos = start.end()  # as JS's RegExp.exec leaves lastIndex
            else:
                found.append((start.start(), end))
                pos = end
        return found, unmatched


# --- walking a page --------------------------------------------------------------


@dataclass
class PageMath:
    math_items: int = 0
    problems: list[str] = field(default_factory=list)


def problem(m: re.Match[str], line: int, why: str) -> str:
    rule = "raw-$$" if m.group(0) == "$$" else "raw-tex"
    text, i = m.string, m.start()
    context = " ".join(text[max(0, i - 30) : i + 40].split())
    return f"{rule}: line {line}: {m.group(0)!r} {why}: ...{context}..."


class MathScanner:
    def __init__(self, cfg: MathConfig) -> None:
        self.cfg = cfg
        self.roots = cfg.root_classes()
        self.findtex = FindTeX(cfg)

    def scan(self, body: Node) -> PageMath:
        result = PageMath()
        self._outside(body, result)
        return result

    def _outside(self, node: Node, result: PageMath) -> None:
        """Text that MathJax never searches: any raw TeX there stays raw."""
        why = f"outside the elements MathJax typesets ({', '.join(self.cfg.selectors)})"
        for child in node.children:
            if isinstance(child, Text):
                for m in RAW_TEX.finditer(child):
                    result.problems.append(problem(m, child.line, why))
            elif child.tag in HIDDEN_TAGS or child.tag in SKIP_TAGS:
                continue
            elif child.classes & self.roots:
                self._region(child, result)
            else:
                self._outside(child, result)

    def _region(self, root: Node, result: PageMath) -> None:
        """One element MathJax typesets: rebuild its strings as HTMLDomStrings does."""
        strings: list[tuple[str, int]] = []
        current: list[Text] = []

        def push() -> None:
            if current:
                strings.append(("".join(current), current[0].line))
                current.clear()

        def walk(node: Node, ignore: bool) -> None:
            for child in node.children:
                if isinstance(child, Text):
                    if not ignore:
                        current.append(child)
                    elif m := RAW_TEX.search(child):
                        why = "inside a mathjax_ignore element"
                        result.problems.append(problem(m, child.line, why))
                elif child.tag == "br":
                    if not ignore:
                        newline = Text("\n")
                        newline.line = child.line
                        current.append(newline)
                elif child.tag != "wbr":
                    push()
                    process = bool(child.classes & PROCESS_CLASSES)
                    if child.children and (process or child.tag not in SKIP_TAGS):
                        walk(
                            child,
                            (ignore or bool(child.classes & IGNORE_CLASSES))
                            and not process,
                        )
                    push()

        walk(Node("#wrapper", {}, [root]), False)
        why = (
            "that MathJax will not match (unpaired, or its pair is in another element)"
        )
        for text, line in strings:
            found, unmatched = self.findtex.find(text)
            result.math_items += len(found)
            covered = [False] * len(text)
            for a, b in found:
                covered[a:b] = [True] * (b - a)
            for m in RAW_TEX.finditer(text):
                a, b = m.span()
                opens = m.group(0) != "$$" and a in unmatched
                if (m.group(0) == "$$" and not all(covered[a:b])) or opens:
                    result.problems.append(problem(m, line, why))


# --- the checks ------------------------------------------------------------------


def resolve(page: PurePosixPath, url: str) -> str:
    """Site-relative path of a relative URL found on ``page``."""
    url = url.split("#")[0].split("?")[0]
    if url.startswith("/"):
        parts = list(PurePosixPath(url.lstrip("/")).parts)
    else:
        parts = list(page.parent.parts) + list(PurePosixPath(url).parts)
    out: list[str] = []
    for part in parts:
        if part == "..":
            if out:
                out.pop()
        elif part not in {".", ""}:
            out.append(part)
    return "/".join(out)


def check_page(site: Path, path: Path, scanner: MathScanner) -> tuple[list, list, int]:
    rel = PurePosixPath(path.relative_to(site).as_posix())
    builder = TreeBuilder()
    builder.feed(path.read_text(encoding="utf-8"))
    builder.close()
    errors: list[str] = []
    warnings: list[str] = []
    scripts: list[str] = []
    for node in iter_nodes(builder.root):
        if node.tag == "script" and "src" in node.attrs:
            src = node.attrs["src"]
            if REMOTE.match(src):
                errors.append(f"remote: line {node.line}: <script src={src!r}>")
            elif src.strip():
                scripts.append(resolve(rel, src))
        elif node.tag == "link" and "href" in node.attrs:
            rels = set(node.attrs.get("rel", "").lower().split())
            if rels & LOADING_RELS and REMOTE.match(node.attrs["href"]):
                errors.append(
                    f"remote: line {node.line}: <link rel={node.attrs['rel']!r} "
                    f"href={node.attrs['href']!r}>"
                )
        elif node.tag in {"script", "style"}:
            code = "".join(c for c in node.children if isinstance(c, str))
            for m in RUNTIME_REMOTE.finditer(code):
                warnings.append(
                    f"remote (run time): line {node.line}: inline <{node.tag}> "
                    f"may load {m.group(1)}"
                )
    body = next((n for n in iter_nodes(builder.root) if n.tag == "body"), builder.root)
    math = scanner.scan(body)
    errors.extend(math.problems)
    if math.math_items:
        if MATHJAX_JS not in scripts:
            errors.append(f"no-mathjax: has maths but does not load {MATHJAX_JS}")
        elif CONFIG_JS not in scripts[: scripts.index(MATHJAX_JS)]:
            errors.append(f"no-mathjax: does not load {CONFIG_JS} before {MATHJAX_JS}")
    return errors, warnings, math.math_items


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    site = Path(argv[1])
    if not (site / "index.html").is_file():
        print(f"{site}: not a built site (no index.html)", file=sys.stderr)
        return 2
    config = site / CONFIG_JS
    try:
        scanner = MathScanner(read_config(config))
    except (OSError, ValueError) as exc:
        print(f"{CONFIG_JS}: cannot read the MathJax configuration: {exc}")
        return 1
    site_errors = []
    if not (site / MATHJAX_JS).is_file():
        site_errors.append(f"no-mathjax: {MATHJAX_JS} is missing from the site")
    if not any((site / FONTS_DIR).glob("*.woff")):
        site_errors.append(f"no-mathjax: no MathJax fonts in {FONTS_DIR}")
    pages = sorted(
        p
        for p in site.rglob("*.html")
        if not p.relative_to(site).as_posix().startswith(VENDOR_DIR)
    )
    n_errors = n_warnings = with_math = items = 0
    for page in pages:
        errors, warnings, n_math = check_page(site, page, scanner)
        name = page.relative_to(site).as_posix()
        with_math += bool(n_math)
        items += n_math
        if n_math and site_errors:
            errors = site_errors + errors
        for message in errors:
            print(f"{name}: ERROR {message}")
        for message in warnings:
            print(f"{name}: warning {message}")
        n_errors += len(errors)
        n_warnings += len(warnings)
    print(
        f"check_math: {len(pages)} pages, {with_math} with maths ({items} formulas "
        f"found as MathJax will), {n_errors} errors, {n_warnings} warnings"
    )
    return 1 if n_errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
