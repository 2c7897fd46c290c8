"""No import cycles among the library packages, function-level imports included.

A cycle hidden by importing inside a function still couples two modules both ways (and breaks
when someone moves the import to the top). The graph is read from the source with `ast`, so
every `import` statement counts wherever it sits. Edges go to the module named by the
statement: `from a.b import c` is an edge to a.b.c when that is a module, else to a.b. Parent
packages that Python initialises on the way are not edges (a package's __init__ importing its
own submodules is the ordinary layout, not a cycle).
"""
from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("configs", "data", "model", "objectives", "training", "evaluation", "generation",
            "interop", "utils")


def library_modules() -> dict[str, str]:
  """{dotted module name: file path} for every .py file of the library packages."""
  out = {}
  for pkg in PACKAGES:
    for dirpath, _, files in os.walk(os.path.join(ROOT, pkg)):
      for f in files:
        if f.endswith(".py"):
          rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].replace(os.sep, ".")
          out[rel.removesuffix(".__init__")] = os.path.join(dirpath, f)
  return out


def import_graph(modules: dict[str, str]) -> dict[str, set[str]]:
  graph = {}
  for name, path in modules.items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative import
          parts = package.split(".")
          base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                   for a in node.names]
      else:
        continue
      edges |= {t for t in targets if t in modules and t != name}
    graph[name] = edges
  return graph


def find_cycle(graph: dict[str, set[str]]):
  """One cycle as a list of modules, or None (iterative DFS with colours)."""
  colour = dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done
  for start in sorted(graph):
    if colour[start]:
      continue
    stack = [(start, iter(sorted(graph[start])))]
    path = [start]
    colour[start] = 1
    while stack:
      node, children = stack[-1]
      child = next(children, None)
      if child is None:
        colour[node] = 2
        stack.pop()
        path.pop()
      elif colour[child] == 1:
        return path[path.index(child):] + [child]
      elif colour[child] == 0:
        colour[child] = 1
        stack.append((child, iter(sorted(graph[child]))))
        path.append(child)
  return None


def test_cycle_finder_finds_a_planted_cycle():
  # the checker itself must be able to fail
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_relative_and_from_imports_are_resolved(tmp_path):
  # `from model import encoder` is an edge to the module model.encoder, not to the package
  modules = library_modules()
  graph = import_graph(modules)
  assert "model.config" in graph and "utils.errors" in modules
  assert any("utils.errors" in edges for edges in graph.values())


def test_no_import_cycles_among_library_modules():
  cycle = find_cycle(import_graph(library_modules()))
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


# Data flows one way (config -> data -> model -> objective -> training -> evaluation): a
# package may not import the packages listed for it. evaluation/ holds pure functions of
# (model, params, data), so it never reaches into training/; the model knows nothing of data,
# losses or loops.
FORBIDDEN = {
    "utils": ("configs", "data", "model", "objectives", "training", "evaluation", "generation",
              "interop"),
    "data": ("configs", "model", "objectives", "training", "evaluation", "generation",
             "interop"),
    "model": ("configs", "data", "objectives", "training", "evaluation", "generation",
              "interop"),
    "objectives": ("configs", "data", "training", "evaluation", "generation", "interop"),
    "evaluation": ("configs", "training", "interop"),
    # decoding is a function of (model, params, prompts), as evaluation is
    "generation": ("configs", "training", "evaluation", "interop"),
    # checkpoint conversion builds workdirs through training/; nothing builds on it
    "configs": ("interop",),
    "training": ("interop",),
}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
  return sorted(f"{a} imports {b}" for a, edges in graph.items() for b in edges
                if b.split(".")[0] in FORBIDDEN.get(a.split(".")[0], ()))


def test_layering_finds_a_planted_violation():
  assert layer_violations({"evaluation.sts": {"training.contrastive", "model.encoder"},
                           "training.loop": {"evaluation.sts"}}) == [
                               "evaluation.sts imports training.contrastive"]


def test_packages_import_only_downstream_of_the_data_flow():
  violations = layer_violations(import_graph(library_modules()))
  assert not violations, "; ".join(violations)
