"""Process-wide threading set-up (``recon._env``): the variables OpenMP and numba read when they load."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS")


def _environment_after_import(overrides: dict[str, str]) -> dict[str, str]:
    """The threading variables as a fresh interpreter sees them after ``import recon``."""
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES and k != "ORBITMESH_THREADS"}
    env.update(overrides)
    code = f"import json, os, recon; print(json.dumps({{k: os.environ.get(k) for k in {VARIABLES!r}}}))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_passive_wait_with_a_short_spin_and_threads_from_the_cores():
    seen = _environment_after_import({"ORBITMESH_THREADS": "3"})
    assert seen["OMP_WAIT_POLICY"] == "passive"
    # A bounded spin: 0 would sleep after every parallel region (the slow case this avoids); more than 3000
    # made two fits sharing the cores slower (6000: +10%, 20000: +35-45%; README, "Threads").
    assert 0 < int(seen["GOMP_SPINCOUNT"]) <= 3000
    assert seen["OMP_NUM_THREADS"] == seen["NUMBA_NUM_THREADS"] == "3"


@pytest.mark.parametrize("name, value", [("GOMP_SPINCOUNT", "0"), ("OMP_WAIT_POLICY", "active")])
def test_values_the_user_exported_win(name, value):
    assert _environment_after_import({name: value})[name] == value
