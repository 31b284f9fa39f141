"""csrc/ is layered bottom up, and nothing includes or calls back up: every csrc/*.c and *.h belongs
to one declared layer (LAYERS); a file includes only files of its own layer or of the layers below
it; the includes have no cycle; every chargen_ / CHARGEN_ name a file uses is declared in its own
layer or one below; and a .c file defines only functions that its own layer's headers declare
(not, say, a lower layer's function in the step). The checker is tried on small trees with each
kind of fault, so that it is known to see them."""

from __future__ import annotations

import re
from fnmatch import fnmatch
from pathlib import Path

import pytest
from ckit import CSRC

# Each layer: its files (glob patterns within csrc/), and the layers directly below it (what it
# may include and call; theirs too, transitively). The int8 step's own stack, bottom up: the int8
# matrix (type, row sums, quantizing a row, scales, CPU features, the thread cut) -> the
# matrix-vector kernels -> the packed product -> the step.
LAYERS: dict[str, tuple[list[str], list[str]]] = {
    "base": (["simd.h", "exp2f_poly.h", "amx_emulate.h"], []),
    "pool": (["pool.h", "pool.c"], []),
    "gates": (["gru_gates.h", "gru_gates.c"], ["base"]),
    "sampler": (["sampler.h", "sampler.c"], ["base"]),
    "train": (["gru_train.h", "gru_train.c"], ["gates"]),
    "int8 matrix": (["int8_matrix.h", "int8_matrix.c", "int8_scale.h", "int8_cpu.h"], ["base", "pool"]),
    "int8 matvec": (["int8_matvec.h", "int8_matvec.c"], ["int8 matrix"]),
    "int8 packed": (["int8_gemm.h", "int8_gemm.c"], ["int8 matrix"]),
    "int8 step": (["int8_step.h", "int8_step.c"], ["int8 packed", "int8 matvec", "gates"]),
    "tests": (["test_*.c"], ["int8 step", "sampler", "train", "pool"]),
}

INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)
COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
STRING = re.compile(r'"(?:\\.|[^"\\\n])*"')
NAME = re.compile(r"\b(?:chargen|CHARGEN)_\w+")


def layer_of(name: str, layers=LAYERS) -> str | None:
    for layer, (patterns, _) in layers.items():
        if any(fnmatch(name, p) for p in patterns):
            return layer
    return None


def below(layer: str, layers=LAYERS) -> set[str]:
    """The layers `layer` may include and call: itself and every layer under it."""
    seen, todo = set(), [layer]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += layers[name][1]
    return seen


def code(text: str) -> str:
    """The text without comments and string literals (what declares and uses names)."""
    return STRING.sub('""', COMMENT.sub(" ", text))


def declared(text: str) -> tuple[set[str], set[str]]:
    """Names a file declares (functions and types at file scope, macros, enum constants), and the
    non-static functions it defines."""
    decls, defined = set(), set()
    decls |= set(re.findall(r"^\s*#\s*define\s+((?:chargen|CHARGEN)_\w+)", text, re.M))
    decls |= set(re.findall(r"^\s+(CHARGEN_\w+)\s*(?:=|,|$)", text, re.M))  # enum constants
    decls |= set(re.findall(r"\btypedef\b[^;{]*?\b(chargen_\w+)\s*[;(\[]", text))
    decls |= set(re.findall(r"}\s*(chargen_\w+)\s*;", text))
    decls |= set(re.findall(r"\bstruct\s+(chargen_\w+)", text))
    for m in re.finditer(r"^(?![#}\s])(?!typedef\b)(?!return\b)[^\n;{]*?\b(chargen_\w+)\s*\(", text, re.M):
        decls.add(m.group(1))
        depth, i = 0, m.end() - 1  # past the parameter list: a definition opens a body
        while i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
            if depth == 0:
                break
        rest = text[i:].lstrip()
        if rest.startswith("{") and not re.match(r"\s*static\b", text[m.start():m.end()]):
            defined.add(m.group(1))
    return decls, defined


def problems(csrc: Path, layers=LAYERS) -> list[str]:
    """Everything in csrc/ that breaks the layering (empty: none)."""
    files = {p.name: p.read_text() for p in sorted(csrc.iterdir()) if p.suffix in (".c", ".h")}
    out = [f"{name}: in no layer of LAYERS (add it to one)" for name in files if layer_of(name, layers) is None]
    files = {name: text for name, text in files.items() if layer_of(name, layers) is not None}
    clean = {name: code(text) for name, text in files.items()}
    includes = {name: INCLUDE.findall(text) for name, text in files.items()}

    for name, incs in includes.items():
        mine = layer_of(name, layers)
        for inc in incs:
            if inc not in files:
                out.append(f"{name} includes {inc}, which is not a csrc/ file of a layer")
            elif layer_of(inc, layers) not in below(mine, layers):
                out.append(f"{name} ({mine}) includes {inc} ({layer_of(inc, layers)}): not below it")

    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for inc in includes[name]:
            if inc not in files:
                continue
            if state.get(inc) == 1:
                out.append("include cycle: " + " -> ".join(path[path.index(inc):] + [inc]))
            elif inc not in state:
                visit(inc, path + [inc])
        state[name] = 2

    for name in files:
        if name not in state:
            visit(name, [name])

    provider: dict[str, set[str]] = {}
    for name, text in clean.items():
        for decl in declared(text)[0]:
            provider.setdefault(decl, set()).add(name)
    for name, text in clean.items():
        mine = layer_of(name, layers)
        ok = below(mine, layers)
        for used in sorted(set(NAME.findall(text))):
            # a name a header declares comes from that header (a file's own prototype of it does
            # not make a call down); other names from the file itself or a file below
            where = {p for p in provider.get(used, ()) if p.endswith(".h")} or provider.get(used, set())
            if where and name not in where and not any(layer_of(p, layers) in ok for p in where):
                out.append(f"{name} ({mine}) uses {used} of {', '.join(sorted(where))}: not below it")
        if name.endswith(".c"):
            for fn in sorted(declared(text)[1]):
                headers = [p for p in provider.get(fn, ()) if p.endswith(".h")]
                if not any(layer_of(h, layers) == mine for h in headers):
                    out.append(f"{name} ({mine}) defines {fn}, which no header of its layer declares"
                               + (f" ({', '.join(sorted(headers))} does)" if headers else ""))
    return out


def test_csrc_is_layered():
    assert problems(CSRC) == []


def test_the_int8_stack_is_in_the_declared_order():
    """matrix -> matrix-vector kernels -> packed product -> step: each below the next."""
    order = ["int8 matrix", "int8 matvec", "int8 packed", "int8 step"]
    assert "int8 matrix" in below("int8 packed") and "int8 matvec" in below("int8 step")
    assert "int8 packed" in below("int8 step")
    for lower, upper in zip(order, order[1:]):
        assert upper not in below(lower), f"{upper} must not be below {lower}"


# a small tree: m.h/m.c at the bottom, s.h/s.c above it
TREE = {
    "m.h": "#ifndef M_H\n#define M_H\nint chargen_m_sum(int a);\n#endif\n",
    "m.c": '#include "m.h"\nint chargen_m_sum(int a) { return a; }\n',
    "s.h": '#ifndef S_H\n#define S_H\n#include "m.h"\nint chargen_s_step(int a);\n#endif\n',
    "s.c": '#include "s.h"\nint chargen_s_step(int a) { return chargen_m_sum(a); }\n',
}
TREE_LAYERS = {"m": (["m.*"], []), "s": (["s.*"], ["m"])}


@pytest.mark.parametrize(
    "change, expect",
    [
        ({}, None),
        ({"m.h": TREE["m.h"].replace("#define M_H\n", '#define M_H\n#include "s.h"\n')}, "m.h (m) includes s.h (s)"),
        ({"m.c": '#include "m.h"\nint chargen_s_step(int a);\nint chargen_m_sum(int a) { return chargen_s_step(a); }\n'},
         "m.c (m) uses chargen_s_step"),
        ({"s.c": TREE["s.c"] + "int chargen_m_twice(int a) { return 2 * a; }\n", "m.h": TREE["m.h"].replace(
            "#endif", "int chargen_m_twice(int a);\n#endif")}, "s.c (s) defines chargen_m_twice"),
        ({"x.c": "int x;\n"}, "x.c: in no layer"),
    ],
    ids=["clean", "upward include", "upward call", "defines a lower layer's function", "file in no layer"],
)
def test_checker_sees_each_fault(tmp_path, change, expect):
    for name, text in {**TREE, **change}.items():
        (tmp_path / name).write_text(text)
    found = problems(tmp_path, TREE_LAYERS)
    if expect is None:
        assert found == []
    else:
        assert any(p.startswith(expect) for p in found), found


def test_checker_sees_a_cycle(tmp_path):
    """Two headers of one layer that include each other."""
    (tmp_path / "a.h").write_text('#include "b.h"\n')
    (tmp_path / "b.h").write_text('#include "a.h"\n')
    found = problems(tmp_path, {"one": (["*.h"], [])})
    assert any(p.startswith("include cycle: a.h -> b.h -> a.h") for p in found), found


def test_checker_sees_the_old_step(tmp_path):
    """The shape csrc/ had: the packed product's header including the step's, and its function
    defined in the step."""
    for p in CSRC.iterdir():
        if p.suffix in (".c", ".h"):
            (tmp_path / p.name).write_text(p.read_text())
    gemm_h = tmp_path / "int8_gemm.h"
    gemm_h.write_text(gemm_h.read_text().replace('#include "int8_matrix.h"', '#include "int8_step.h"'))
    step_c = tmp_path / "int8_step.c"
    step_c.write_text(step_c.read_text() + "\nvoid chargen_i8_gemm(const chargen_i8_gemm_kernel *k, const chargen_i8_matrix *w, size_t B,"
                      " const uint8_t *xq, size_t ldx, const float *a_scale, const int32_t *zero, float *y,"
                      " chargen_pool *pool) {}\n")
    found = problems(tmp_path)
    assert any(p.startswith("int8_gemm.h (int8 packed) includes int8_step.h (int8 step)") for p in found), found
    assert any(p.startswith("include cycle:") for p in found), found
    assert any(p.startswith("int8_step.c (int8 step) defines chargen_i8_gemm") for p in found), found
