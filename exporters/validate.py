"""The Khronos glTF validator (npm package ``gltf-validator``, run through node) on a GLB file.

``make setup`` installs the package into ``.cache/node`` when npm is present; ``ORBITMESH_GLTF_VALIDATOR``
may point at another ``node_modules/gltf-validator`` folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODULE = REPO_ROOT / ".cache" / "node" / "node_modules" / "gltf-validator"

_SCRIPT = """
const validator = require(process.argv[1]);
const fs = require('fs');
const data = new Uint8Array(fs.readFileSync(process.argv[2]));
validator.validateBytes(data, {maxIssues: 200})
  .then(r => process.stdout.write(JSON.stringify(r)))
  .catch(e => { process.stderr.write(String(e)); process.exit(1); });
"""


class ValidatorUnavailable(RuntimeError):
    """node or the gltf-validator package is not installed."""


def validator_module() -> Path:
    """Where the validator package is; raises ValidatorUnavailable with what to do when it is not."""
    module = Path(os.environ.get("ORBITMESH_GLTF_VALIDATOR", DEFAULT_MODULE))
    if shutil.which("node") is None:
        raise ValidatorUnavailable("node is not installed (the glTF validator runs on node)")
    if not (module / "package.json").is_file():
        raise ValidatorUnavailable(f"gltf-validator is not installed at {module} (run `make setup` with npm present)")
    return module


def validate_glb(path: str | Path, timeout_s: float = 120.0) -> dict:
    """The validator's report of ``path``: a dict with ``issues`` {numErrors, numWarnings, numInfos,
    numHints, messages: [{code, message, severity, pointer}]} and ``info``."""
    module = validator_module()
    proc = subprocess.run(["node", "-e", _SCRIPT, str(module), str(path)], capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"gltf-validator failed on {path}: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)
