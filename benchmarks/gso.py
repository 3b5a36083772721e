"""GSO benchmark runner (the same as ``orbitmesh bench``): see recon/eval/gso.py for what it does.

    python benchmarks/gso.py /data/gso -n 10 --preset fast            # 10 GSO objects picked with seed 0
    python benchmarks/gso.py duck bunny soccerball demo torus -o out/bench --realism default
    python benchmarks/gso.py "/data/meshes/**/*.glb" --workers 2      # a glob, two local processes
    python benchmarks/gso.py /data/gso -n 10 --ray ray://head:10001   # Ray tasks on an existing cluster
"""

from __future__ import annotations

import sys

from recon.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
