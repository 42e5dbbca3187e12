"""Run every bench/bench_*.py, print a table, write build/bench.json as {bench: {figure: number}}."""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "tests"))


def main(argv: list[str]) -> int:
    only = set(argv)
    results: dict[str, dict[str, float]] = {}
    failed = []
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem
        if only and name.removeprefix("bench_") not in only and name not in only:
            continue
        t0 = time.monotonic()
        print(f"== {name}", flush=True)
        try:
            mod = importlib.import_module(f"bench.{name}")
            for bench, figures in mod.run().items():
                results.setdefault(bench, {}).update(figures)
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"   ({time.monotonic() - t0:.1f} s)", flush=True)
    out = REPO / "build" / "bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    width = max((len(f"{b}.{f}") for b, figs in results.items() for f in figs), default=10)
    print(f"\n{'figure':<{width}}  value")
    for bench in sorted(results):
        for fig, val in sorted(results[bench].items()):
            shown = f"{val:.4g}" if isinstance(val, float) else str(val)
            print(f"{bench + '.' + fig:<{width}}  {shown}")
    print(f"\nwrote {out}")
    if failed:
        print("FAILED: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
