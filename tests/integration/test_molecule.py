# SPDX-License-Identifier: Apache-2.0
"""The Molecule scenarios (molecule/), each run as a user runs it: `molecule test --scenario-name NAME`.

They run inside pytest so that CI's workers (pytest-xdist, scripts/test) share them with the other
converges: a converge keeps one of the machine's two cores busy, so two at a time take little longer
than one. Each scenario names its own nodes (kg-molecule-*), so it can run beside any other test.
A failed scenario's whole output is the failure's text.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import REPO, VENV_BIN, skip_unless_registered

# multinode is default's converge on three nodes at once: in the slow tier.
SCENARIOS = ["default", "trixie", "legacy", pytest.param("multinode", marks=pytest.mark.slow)]
# legacy's node runs on gVisor 20221219 (molecule/legacy/molecule.yml).
NEEDS_RUNTIME = {"legacy": "runsc-legacy"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario):
    if scenario in NEEDS_RUNTIME:
        skip_unless_registered(NEEDS_RUNTIME[scenario])
    # Molecule sets ANSIBLE_CONFIG to the config it generates (pipelining: .config/molecule/config.yml).
    env = dict(os.environ, PY_COLORS="0", ANSIBLE_FORCE_COLOR="0")
    proc = subprocess.run([str(VENV_BIN / "molecule"), "test", "--scenario-name", scenario],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-20000:]
    print(output[-3000:])
