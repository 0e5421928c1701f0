#!/usr/bin/env python3
"""Fails if the crate's top-level modules import each other in a circle.

Layers point one way (Worker → commands → object → store, with pure logic
below them all): a module never imports one that imports it back, directly or
through others. Reads `crate::<module>` paths in src/; prints each circle found.
"""
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def imports():
    graph = {}
    for f in SRC.rglob("*.rs"):
        top = f.relative_to(SRC).parts[0].removesuffix(".rs")
        deps = set(re.findall(r"crate::([a-z_][a-z0-9_]*)", f.read_text()))
        graph.setdefault(top, set()).update(d for d in deps if d != top)
    return graph


def circles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


if __name__ == "__main__":
    found = circles(imports())
    for c in found:
        print("import circle: " + " ↔ ".join(c), file=sys.stderr)
    sys.exit(1 if found else 0)
