"""autoopt retention runner: `python3 retention_runner.py OUT script.py [args]` (or
`-m module [args]`). Copied beside the profile and run by the target's own interpreter, so
it stays standalone (standard library only, Python 3.8+).

The program runs in this process (runpy: the pid stays the program's). A thread samples RSS
and the interpreter's allocated blocks every POLL_S. At each new high (STEP above the last
census, and while censuses took under BUDGET of the run) it holds the GIL (a long switch
interval stops the other threads) and takes a gc census: every object reachable from a
frame's locals (innermost first) or a module global, by a breadth-first walk where the
first owner to reach an object keeps it, sized shallowly (sys.getsizeof, plus its
untracked contents: strings, numbers, atom-only dicts and tuples, shared ones split by
their reference counts). The owners are descended while one child holds most of the bytes,
down to the container that holds many items: `Parser.feed: self.stack (list)` holds
300000 dict. OUT (JSON) has the latest census and the samples; OUT.status a progress line.
"""

from __future__ import annotations

import gc
import json
import os
import runpy
import sys
import threading
import time
import types

POLL_S = 0.05
STEP = 1.15
BUDGET = 0.25
MIN_SHARE = 0.01  # owners below this share of the census are folded into "[other roots]"
BIG = 0.05  # a child holding this share of the census is followed on its own
DOMINANT = 0.8  # a child holding this share of its parent is the parent's story
SKIP = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType,
        types.MethodType, types.CodeType, types.FrameType)
SKIP_ATTRS = (*SKIP, classmethod, staticmethod, property)
MIB = 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE")
_ME = os.path.abspath(__file__)


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE / MIB
    except (OSError, ValueError, IndexError):
        return 0.0


def _extra() -> int:
    """The references the walk itself holds to an object while it sizes it (the referents
    list, the loop variable, the call): what a reference count has beyond the program's."""
    probe = [os.urandom(8).hex()]
    refcount = sys.getrefcount
    for ref in gc.get_referents(probe):
        return refcount(ref) - 1
    return 3


EXTRA = _extra()


class Census:
    """One walk of the live objects, with the bookkeeping to name what holds them."""

    def __init__(self, skip_thread: int) -> None:
        self.nodes: list[object] = []
        self.parent: list[int] = []
        self.own: list[float] = []
        self.seen: dict[int, int] = {}
        self.roots: dict[int, dict] = {}
        self.types: dict[type, list] = {}
        self.skip_thread = skip_thread
        self.mine = {id(self), id(self.nodes), id(self.parent), id(self.own), id(self.seen),
                     id(self.roots), id(self.types)}

    # -- the walk --------------------------------------------------------------------
    def tally(self, kind: type, size: float) -> None:
        entry = self.types.get(kind)
        if entry is None:
            entry = self.types[kind] = [0, 0.0]
        entry[0] += 1
        entry[1] += size

    def atom(self, obj: object, refs: int, depth: int = 0) -> float:
        """An untracked object's share: its size split between its `refs` holders and,
        for an atom-only dict or tuple, its contents' shares."""
        size = sys.getsizeof(obj, 0) / max(1, refs)
        if depth < 3 and type(obj) in (dict, tuple):
            for ref in gc.get_referents(obj):
                if not gc.is_tracked(ref) and not isinstance(ref, SKIP):
                    holders = sys.getrefcount(ref) - EXTRA  # before `ref` is an argument
                    size += self.atom(ref, holders, depth + 1) / max(1, refs)
        return size

    def walk_from(self, obj: object, root: dict) -> None:
        """Breadth first from `obj`: each tracked object it reaches that no earlier root
        reached becomes a node (its parent: the node that reached it first)."""
        seen, nodes, parent, own, mine = self.seen, self.nodes, self.parent, self.own, self.mine
        if id(obj) in seen or id(obj) in mine or isinstance(obj, SKIP):
            return
        start = seen[id(obj)] = len(nodes)
        nodes.append(obj)
        parent.append(-1)
        own.append(0.0)
        self.roots[start] = dict(root, name=f"{root['name']} ({type(obj).__name__})")
        getsizeof, referents, tracked, refcount = sys.getsizeof, gc.get_referents, \
            gc.is_tracked, sys.getrefcount
        tally = self.tally
        types = self.types
        i = start
        while i < len(nodes):
            node = nodes[i]
            size = float(getsizeof(node, 0))
            tally(type(node), size)
            for ref in referents(node):
                if tracked(ref):
                    key = id(ref)
                    if key not in seen and key not in mine and not isinstance(ref, SKIP):
                        seen[key] = len(nodes)
                        nodes.append(ref)
                        parent.append(i)
                        own.append(0.0)
                    continue
                holders = refcount(ref) - EXTRA  # before `ref` is an argument
                kind = type(ref)
                if kind is dict or kind is tuple:
                    share = self.atom(ref, holders)
                else:
                    share = getsizeof(ref, 0) / (holders if holders > 1 else 1)
                size += share
                entry = types.get(kind)
                if entry is None:
                    entry = types[kind] = [0, 0.0]
                entry[0] += 1
                entry[1] += share
            own[i] = size
            i += 1

    def run(self) -> None:
        frames = sys._current_frames()
        for tid, frame in frames.items():
            if tid == self.skip_thread:
                continue
            f = frame
            while f is not None:
                self.frame_roots(f)
                f = f.f_back
        for name, module in list(sys.modules.items()):
            self.module_roots(name, module)

    def frame_roots(self, f: types.FrameType) -> None:
        code = f.f_code
        if code.co_filename == _ME or code.co_filename.endswith(("runpy.py", "<frozen runpy>")):
            return
        if code.co_name == "<module>":
            return  # its locals are the module's globals: walked as globals
        where = getattr(code, "co_qualname", code.co_name)
        for name, value in list(f.f_locals.items()):
            self.walk_from(value, {"name": f"{where}: {name}", "file": code.co_filename,
                                   "line": f.f_lineno})

    def module_roots(self, name: str, module: object) -> None:
        d = getattr(module, "__dict__", None)
        file = getattr(module, "__file__", None)  # the module's name says where it is
        if not isinstance(d, dict) or file == _ME:
            return
        if name == "__main__" and file:
            name = os.path.splitext(os.path.basename(file))[0]
        for key, value in list(d.items()):
            if key.startswith("__") and key.endswith("__"):
                continue
            if isinstance(value, type) and getattr(value, "__module__", None) == d.get("__name__"):
                for attr, held in list(vars(value).items()):
                    if not attr.startswith("__") and not isinstance(held, SKIP_ATTRS):
                        self.walk_from(held, {"name": f"{name}.{key}.{attr}"})
                continue
            self.walk_from(value, {"name": f"{name}.{key}"})

    # -- the answer ------------------------------------------------------------------
    def report(self, started: float) -> dict:
        unreached, unreached_n = 0.0, 0
        mine = self.mine | {id(v) for v in self.types.values()}
        for obj in gc.get_objects():  # first: what follows allocates containers of its own
            if id(obj) not in self.seen and id(obj) not in mine and not isinstance(obj, SKIP):
                size = sys.getsizeof(obj, 0)
                unreached += size
                unreached_n += 1
                self.tally(type(obj), size)
        n = len(self.nodes)
        retained = list(self.own)
        for i in range(n - 1, -1, -1):
            p = self.parent[i]
            if p >= 0:
                retained[p] += retained[i]
        total = sum(self.own) + unreached
        threshold = MIN_SHARE * total
        big: dict[int, list[int]] = {}
        for i in range(n):
            p = self.parent[i]
            if p >= 0 and retained[i] >= threshold:
                big.setdefault(p, []).append(i)
        stacks = []
        other_roots = 0.0
        for root, info in self.roots.items():
            if retained[root] < threshold:
                other_roots += retained[root]
                continue
            shown = self.owners(root, retained, big, total, [self.root_frame(info)], stacks)
            rest = retained[root] - shown
            if rest >= threshold / 2:
                stacks.append({"frames": [self.root_frame(info), {"name": "other objects"}],
                               "value": rest})
            else:
                other_roots += rest
        if other_roots:
            stacks.append({"frames": [{"name": "[other roots, each under 1%]"}],
                           "value": other_roots})
        if unreached:
            stacks.append({"frames": [{"name": "[not reached from a frame or a module global: "
                                               "held by C code, or garbage cycles]"}],
                           "value": unreached, "count": unreached_n})
        ranked = sorted(self.types.items(), key=lambda kv: -kv[1][1])[:12]
        return {"version": 1, "total_bytes": total, "objects": n + unreached_n,
                "census_s": round(time.time() - started, 3), "stacks": stacks,
                "types": [[k.__name__, v[0], round(v[1])] for k, v in ranked]}

    def owners(self, node: int, retained: list[float], big: dict[int, list[int]],
               total: float, chain: list[dict], stacks: list[dict]) -> float:
        """Follow `node` down to the containers that hold its bytes; returns what they
        hold (the rest of the node is its caller's "other objects")."""
        for _ in range(40):
            kids = sorted(big.get(node, []), key=lambda i: -retained[i])
            if kids and retained[kids[0]] >= DOMINANT * retained[node]:
                chain = [*chain, self.edge(node, kids[0])]
                node = kids[0]
                continue
            large = [k for k in kids if retained[k] >= BIG * total]
            if large and sum(retained[k] for k in large) >= 0.5 * retained[node]:
                return sum(self.owners(k, retained, big, total, [*chain, self.edge(node, k)],
                                       stacks) for k in large)
            break
        held, count = self.items(self.nodes[node])
        chain = _attributes(chain)
        if len(chain) > 1:  # a root has its type already
            kind = type(self.nodes[node]).__name__
            chain[-1] = dict(chain[-1], name=f"{chain[-1]['name']} ({kind})")
        stacks.append({"frames": [*chain, {"name": held}], "value": retained[node],
                       "count": count})
        return retained[node]

    @staticmethod
    def root_frame(info: dict) -> dict:
        return dict(info)

    def edge(self, parent: int, child: int) -> dict:
        """How `parent` holds `child`: `.attr`, `['key']`, `[…]`, or `→ type`."""
        p, c = self.nodes[parent], self.nodes[child]
        if isinstance(p, dict):
            for k, v in p.items():
                if v is c:
                    if isinstance(k, str) and len(k) <= 24:
                        return {"name": f"[{k!r}]"}
                    break
            return {"name": "[…]"}
        try:
            attrs = object.__getattribute__(p, "__dict__")
        except AttributeError:
            attrs = {}
        if not isinstance(attrs, dict) or (not attrs and hasattr(type(p), "__iter__")):
            return {"name": "[…]"}
        if attrs is c:
            return {"name": ".__dict__"}
        for k, v in attrs.items():
            if v is c:
                return {"name": f".{k}"}
        for slot in getattr(type(p), "__slots__", ()):
            if getattr(p, slot, None) is c:
                return {"name": f".{slot}"}
        return {"name": f" → {type(c).__name__}"}

    @staticmethod
    def items(obj: object) -> tuple[str, int]:
        """What the container holds, by type: `dict` (and its count), or `dict, str`."""
        kinds: dict[str, int] = {}
        for ref in gc.get_referents(obj):
            if ref is not type(obj):
                kinds[type(ref).__name__] = kinds.get(type(ref).__name__, 0) + 1
        ranked = sorted(kinds.items(), key=lambda kv: -kv[1])
        if not ranked:
            return "its own bytes", 0
        name = ranked[0][0] + (f" (and {', '.join(k for k, _ in ranked[1:3])})"
                               if len(ranked) > 1 else "")
        return name, sum(kinds.values())


def _attributes(chain: list[dict]) -> list[dict]:
    """`.__dict__` then `['stack']` reads `.stack`."""
    out: list[dict] = []
    for step in chain:
        name = step["name"]
        if out and out[-1]["name"] == ".__dict__" and name.startswith("['") and len(out) > 1:
            out[-1] = {"name": "." + name[2:-2]}
        else:
            out.append(step)
    return out


class Watcher:
    def __init__(self, out: str) -> None:
        self.out = out
        self.t0 = time.time()
        self.samples: list[list[float]] = []
        self.result: dict | None = None
        self.census_at = (0.0, 0)
        self.max = (0.0, 0)
        self.spent = 0.0
        self.censuses = 0
        self.last_write = 0.0
        self.lock = threading.Lock()

    def sample(self) -> tuple[float, int]:
        rss, blocks = rss_mb(), sys.getallocatedblocks()
        self.samples.append([round(time.time() - self.t0, 3), round(rss, 2), blocks])
        self.max = (max(self.max[0], rss), max(self.max[1], blocks))
        return rss, blocks

    def due(self, rss: float, blocks: int) -> bool:
        elapsed = time.time() - self.t0
        if self.spent > BUDGET * max(elapsed, 1.0):
            return False
        return rss > STEP * self.census_at[0] or blocks > STEP * self.census_at[1]

    def census(self, rss: float, blocks: int) -> None:
        with self.lock:
            started = time.time()
            old = sys.getswitchinterval()
            sys.setswitchinterval(1000.0)
            try:
                c = Census(threading.get_ident())
                gc.disable()
                try:
                    c.run()
                    result = c.report(started)
                finally:
                    gc.enable()
                    del c
            finally:
                sys.setswitchinterval(old)
            result.update(t_s=round(started - self.t0, 3), rss_mb=round(rss, 2), blocks=blocks)
            self.result = result
            self.censuses += 1
            self.spent += time.time() - started
            self.census_at = (rss_mb(), blocks)
            self.write()

    def write(self) -> None:
        data = dict(self.result or {}, samples=self.samples, censuses=self.censuses,
                    max_rss_mb=round(self.max[0], 2), max_blocks=self.max[1],
                    census_total_s=round(self.spent, 3))
        with open(self.out + ".tmp", "w") as f:
            json.dump(data, f)
        os.replace(self.out + ".tmp", self.out)
        last = self.result or {}
        status = (f"RSS {self.samples[-1][1] if self.samples else 0:.0f} MiB (max "
                  f"{self.max[0]:.0f}), {self.censuses} census(es), the latest at "
                  f"{last.get('rss_mb', 0):.0f} MiB, {self.spent:.1f} s spent")
        with open(self.out + ".status", "w") as f:
            f.write(status + "\n")
        self.last_write = time.time()

    def loop(self) -> None:
        while True:
            time.sleep(POLL_S)
            rss, blocks = self.sample()
            if self.due(rss, blocks):
                self.census(rss, blocks)
            elif time.time() - self.last_write > 2.0:
                with self.lock:
                    self.write()

    def finish(self) -> None:
        rss, blocks = self.sample()
        if blocks >= 0.98 * self.max[1] and blocks > self.census_at[1] * 1.02:
            self.census(rss, blocks)  # the program ends at its peak: census it there
        with self.lock:
            self.write()


def main() -> None:
    """Run the program as `__main__` and leave it there (runpy would restore the runner's
    module on the way out, and the census at exit would lose the program's globals)."""
    out, rest = sys.argv[1], sys.argv[2:]
    if rest[0] == "-m":
        sys.argv = rest[1:]
        _, spec, code = runpy._get_module_details(rest[1])  # type: ignore[attr-defined]
        file = spec.origin
    else:
        sys.argv = rest
        file = os.path.abspath(rest[0])
        sys.path[0] = os.path.dirname(file)
        with open(file, "rb") as f:
            code = compile(f.read(), file, "exec")
    module = types.ModuleType("__main__")
    module.__dict__.update(__file__=file, __builtins__=__builtins__, __cached__=None)
    sys.modules["__main__"] = module
    watcher = Watcher(out)
    watcher.sample()
    threading.Thread(target=watcher.loop, daemon=True, name="autoopt-retention").start()
    try:
        exec(code, module.__dict__)
    finally:
        watcher.finish()


if __name__ == "__main__":
    main()
