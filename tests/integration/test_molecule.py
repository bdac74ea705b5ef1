# SPDX-License-Identifier: Apache-2.0
"""The Molecule scenarios (molecule/), each run as a user runs it: `molecule test --scenario-name NAME`.

They run inside pytest so that CI's workers (pytest-xdist, scripts/test) share them with the other
converges: a converge keeps one of the machine's two cores busy, so two at a time take little longer
than one. Each scenario names its own nodes (kg-molecule-*), so it can run beside any other test.
A failed scenario's whole output is the failure's text.
"""

from __future__ import annotations

import pytest

from conftest import molecule_test, skip_unless_registered

# multinode is default's converge on three nodes at once: in the slow tier.
# kubernetes has a file of its own (test_kubernetes.py), so that CI's other worker can take it.
SCENARIOS = ["default", "trixie", "legacy", pytest.param("multinode", marks=pytest.mark.slow)]
# legacy's node runs on gVisor 20221219 (molecule/legacy/molecule.yml).
NEEDS_RUNTIME = {"legacy": "runsc-legacy"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario):
    if scenario in NEEDS_RUNTIME:
        skip_unless_registered(NEEDS_RUNTIME[scenario])
    print(molecule_test(scenario)[-3000:])
