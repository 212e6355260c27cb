// MathJax configuration; the library itself is vendored in ./vendor/mathjax/ (offline)
// and loaded after this file (extra_javascript in mkdocs.yml).
//
// Two kinds of page carry maths:
//  * Markdown pages (and docstrings): pymdownx.arithmatex (generic mode) turns the maths
//    into <span class="arithmatex">\(...\)</span> and <div class="arithmatex">\[...\]</div>.
//  * Notebook pages (mkdocs-jupyter): the Markdown cells keep Jupyter's $...$ and
//    $$...$$ (also \(...\), \[...\] and \begin{env}) as text, in .jp-RenderedMarkdown
//    (rich outputs: .jp-RenderedLatex).
// MathJax searches ONLY the elements matching MATH_SELECTORS, so a stray "$" in ordinary
// prose is never taken for maths, and inside them it skips <code>, <pre>, <script>, ...
// (its default skipHtmlTags) and anything with class "mathjax_ignore".
// docs/_ext/check_math.py mirrors these selectors and delimiters: keep them in step.
const MATH_SELECTORS = [".arithmatex", ".jp-RenderedMarkdown", ".jp-RenderedLatex"];

window.MathJax = {
  tex: {
    inlineMath: [
      ["\\(", "\\)"],
      ["$", "$"],
    ],
    displayMath: [
      ["\\[", "\\]"],
      ["$$", "$$"],
    ],
    processEscapes: true, // \$ is a literal dollar sign
    processEnvironments: true, // \begin{align}...\end{align} without delimiters
  },
  startup: {
    elements: MATH_SELECTORS,
  },
};

// Material's instant navigation (if enabled) swaps the page content without reloading:
// typeset the new content each time. On the first page load MathJax is not loaded yet
// when this runs (MathJax.typesetPromise is undefined) and typesets at its own startup.
if (typeof document$ !== "undefined") {
  document$.subscribe(() => {
    if (window.MathJax && MathJax.typesetPromise) {
      MathJax.startup.output.clearCache();
      MathJax.typesetClear();
      MathJax.texReset();
      MathJax.typesetPromise(MATH_SELECTORS);
    }
  });
}
