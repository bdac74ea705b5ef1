# SPDX-License-Identifier: Apache-2.0
"""Unit tests for plugins/module_utils/gvisor_facts.py that touch nothing
(the probe's module docs, its options, its readers on scratch files). The
parsers are test_host_text.py's; the real probe on this machine, as root, is
tests/integration/test_probe_on_this_machine.py."""

from __future__ import annotations

import pathlib

import pytest
from host_samples import OBSERVED_GVISOR_20240729

from ansible_collections.k3s_gvisor.node.plugins.module_utils import gvisor_blockers as gb
from ansible_collections.k3s_gvisor.node.plugins.module_utils import gvisor_facts as gf

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_dev_null_bound_over_dev_kmsg_is_not_dev_kmsg(tmp_path):
    """What k3s-gvisor-prestart --dev-kmsg leaves: the probe must still see B12 after the engine started."""
    assert gf.dev_kmsg_readable("/dev/null") is False
    assert gf.dev_kmsg_readable(str(tmp_path / "missing")) is False
    readable = tmp_path / "kmsg"
    readable.write_text("")
    assert gf.dev_kmsg_readable(str(readable)) is True


def module_docs() -> dict:
    """DOCUMENTATION and RETURN of the Ansible module, parsed."""
    import ast

    import yaml

    source = (ROOT / "plugins" / "modules" / "gvisor_probe.py").read_text()
    strings = {
        node.targets[0].id: node.value.value
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    return {name: yaml.safe_load(strings[name]) for name in ("DOCUMENTATION", "EXAMPLES", "RETURN")}


def test_module_docs_match_the_facts():
    docs = module_docs()
    assert docs["DOCUMENTATION"]["options"]["skip"]["choices"] == list(gf.SKIPPABLE_TESTS)
    documented = docs["RETURN"]["ansible_facts"]["contains"]["gvisor"]["contains"]
    facts = gf.HostProbe(skip=gf.SKIPPABLE_TESTS).collect()
    # Facts only: the decision record is gvisor_decide's.
    assert set(documented) == set(facts)
    for key, spec in documented.items():
        # runtime_check's keys are the runtimes found.
        if key != "runtime_check" and isinstance(facts[key], dict):
            assert set(spec["contains"]) == set(facts[key]), key
    assert set(documented["blockers"]["contains"]) == set(gb.evaluate_blockers(OBSERVED_GVISOR_20240729)[0])


def test_unknown_skip_name_is_rejected():
    with pytest.raises(ValueError):
        gf.HostProbe(skip=["overlay"])


def test_a_local_repository_answers_where_its_file_is(tmp_path):
    package = tmp_path / "crun_1.28-1_amd64.deb"
    package.write_bytes(b"!<arch>\n")
    assert gf.url_answers(package.as_uri(), 1.0) is True
    assert gf.url_answers((tmp_path / "gone.deb").as_uri(), 1.0) is False
    assert gf.url_answers("file:" + str(package), 1.0) is True  # apt prints file:/path
