"""Griffe extension: render the reStructuredText bits of twa_jax's docstrings in MkDocs.

The docstrings are Google style but use a few Sphinx constructs, which ``help()`` shows as they
are and which mkdocstrings would otherwise print literally:

* roles ``:func:`x```, ``:class:`~pkg.X```, ``:mod:``, ``:meth:``, ``:attr:``, ``:data:``,
  ``:exc:``, ``:obj:``: become mkdocstrings cross-references ``[x][twa_jax.public.path]`` when
  the target is documented on the site (resolved from the docstring's scope as Sphinx would,
  then mapped to its public path), otherwise inline code;
* ``:math:`x``` and ``.. math::`` blocks: become MathJax (``pymdownx.arithmatex``);
* a paragraph ending in ``::`` before an indented literal block: the ``::`` becomes ``:`` (the
  indented block is already a Markdown code block).

Loaded by ``mkdocs.yml`` as ``docs/griffe_sphinx_roles.py:SphinxRoles``; it changes only the
docstring text handed to mkdocstrings, never the package.
"""

from __future__ import annotations

import re

import griffe

PACKAGE = "twa_jax"
# The public modules the API pages render (``twa_jax.sweep_plot`` is an alias of ``_sweep_plot``).
PUBLIC_MODULES = (
    "twa_jax",
    "twa_jax.states",
    "twa_jax.weyl",
    "twa_jax.observables",
    "twa_jax.exact",
    "twa_jax.models",
    "twa_jax.sweep_plot",
)

ROLE = re.compile(r":(?:py:)?(func|class|mod|meth|attr|data|exc|obj):`([^`]+)`")
MATH_ROLE = re.compile(r":math:`([^`]+)`")
MATH_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<first>.*)$")
LITERAL_INTRO = re.compile(r"(?<=\S)::$")

_logger = griffe.get_logger("griffe_sphinx_roles")


def _target(obj):
    """Follow aliases to the object they point at (``None`` if it cannot be resolved)."""
    seen = 0
    while isinstance(obj, griffe.Alias) and seen < 20:
        try:
            obj = obj.target
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None
        seen += 1
    return obj


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles and math in every docstring of the package (see the module doc)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:  # griffe >= 1.0
        if pkg.path != PACKAGE:
            return
        self._collection = pkg.modules_collection
        self._public = self._public_paths(pkg)
        for obj in self._walk(pkg, set()):
            if obj.docstring is not None and obj.docstring.value:
                obj.docstring.value = self._convert(obj.docstring.value, obj)

    # -- the public API: canonical path -> the path under which the site documents it --------
    def _get(self, path):
        try:
            return self._collection.get_member(path)
        except (KeyError, ValueError, griffe.AliasResolutionError):
            return None

    def _public_paths(self, pkg):
        public = {}

        def add(obj, path, depth):
            target = _target(obj)
            if target is None or depth > 3:
                return
            if not target.is_module and not (target.docstring and target.docstring.value):
                return  # not rendered (mkdocstrings skips objects without a docstring)
            public.setdefault(target.path, path)
            public.setdefault(path, path)
            if target.is_class:
                for name, member in target.members.items():
                    if not name.startswith("_"):
                        add(member, f"{path}.{name}", depth + 1)

        for mod_path in PUBLIC_MODULES:
            mod = self._get(mod_path)
            target = _target(mod) if mod is not None else None
            if target is None:
                continue
            public.setdefault(target.path, mod_path)
            public.setdefault(mod_path, mod_path)
            for name, member in target.members.items():
                if name.startswith("_"):
                    continue
                if member.is_alias:
                    resolved = _target(member)
                    if resolved is None or resolved.is_module:
                        continue  # submodules are pages of their own
                elif member.is_module:
                    continue
                add(member, f"{mod_path}.{name}", 0)
        return public

    def _walk(self, obj, seen):
        if obj.path in seen:
            return
        seen.add(obj.path)
        yield obj
        for member in obj.members.values():
            if member.is_alias:
                continue
            yield from self._walk(member, seen)

    # -- resolution ----------------------------------------------------------------------------
    def _resolve(self, name, obj):
        """Full (canonical) path of ``name`` seen from ``obj``'s docstring, or ``None``."""
        head, _, rest = name.partition(".")
        candidates = []
        if name.startswith(PACKAGE + ".") or name == PACKAGE:
            candidates.append(name)
        scope = obj
        while scope is not None:
            if head in scope.members:
                candidates.append(scope.members[head].path + ("." + rest if rest else ""))
            if getattr(scope, "imports", None) and head in scope.imports:
                candidates.append(scope.imports[head] + ("." + rest if rest else ""))
            scope = scope.parent
        candidates.append(f"{PACKAGE}.{name}")
        for path in candidates:
            found = self._get(path)
            target = _target(found) if found is not None else None
            if target is not None:
                return target.path, path
        return None

    def _role(self, match, obj):
        text = match.group(2).strip()
        short = text.startswith("~")
        name = text.lstrip("~.")
        display = name.rsplit(".", 1)[-1] if short else name
        resolved = self._resolve(name, obj)
        if resolved is not None:
            canonical, as_written = resolved
            public = self._public.get(canonical) or self._public.get(as_written)
            if public is not None:
                return f"[`{display}`][{public}]"
        return f"`{display}`"

    # -- conversion ----------------------------------------------------------------------------
    def _convert(self, text, obj):
        lines = text.split("\n")
        out = []
        i = 0
        while i < len(lines):
            m = MATH_BLOCK.match(lines[i])
            if m is None:
                out.append(lines[i])
                i += 1
                continue
            indent = m.group("indent")
            body = [m.group("first")] if m.group("first").strip() else []
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(indent + " ")):
                if not lines[i].strip() and (i + 1 >= len(lines) or not lines[i + 1].startswith(indent + " ")):
                    break
                body.append(lines[i].strip())
                i += 1
            out += ["", indent + "\\[", *(indent + b for b in body if b), indent + "\\]", ""]
        text = "\n".join(out)
        text = MATH_ROLE.sub(lambda m: "\\(" + m.group(1) + "\\)", text)
        text = ROLE.sub(lambda m: self._role(m, obj), text)
        text = "\n".join(LITERAL_INTRO.sub(":", line) if line.rstrip().endswith("::") else line
                         for line in text.split("\n"))
        return text
