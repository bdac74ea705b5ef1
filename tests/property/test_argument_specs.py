# SPDX-License-Identifier: Apache-2.0
"""Bad input to every role's variables, as roles/*/meta/argument_specs.yml
declare them: generated wrong types and unknown choices must each be refused
with an error naming the variable, by the same validator Ansible runs before
a role's first task (ansible.builtin.validate_argument_spec); and a role
called with such a variable stops at that validation, before any task of
its own ran.

Only what the validator must refuse is generated: it converts freely between
strings, numbers and lists where Ansible does (a list given for a string
becomes its text), so those are not errors of the spec; what no spec can
express (an empty path, a CIDR's form) each role checks itself (tested with
the roles)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("ARGUMENT_SPEC_EXAMPLES", "150"))


def entry_points() -> dict[str, dict]:
    """{"role:entry point": options} of every role."""
    found = {}
    for path in sorted(REPO.glob("roles/*/meta/argument_specs.yml")):
        for entry, spec in yaml.safe_load(path.read_text())["argument_specs"].items():
            found[f"{path.parts[-3]}:{entry}"] = spec.get("options", {})
    return found


ENTRY_POINTS = entry_points()
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


def reads_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def refused_values(spec: dict):
    """Values the validator must refuse for an option of this spec, or None when none can be named."""
    kind = spec.get("type", "str")
    if spec.get("choices"):
        choices = {str(choice) for choice in spec["choices"]}
        return TEXT.filter(lambda value: value not in choices)
    if kind == "bool":
        return st.one_of(st.sampled_from(["maybe", "enabled-ish", "2", "-1"]),
                         st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f not in (0.0, 1.0)),
                         st.dictionaries(TEXT, st.integers(), min_size=1))
    if kind == "int":
        # Text that reads as a number is not generated: Ansible takes "+0.0" as 0, and fails "Infinity" without
        # naming the variable ("cannot convert Infinity to integer", its own wording).
        return st.one_of(TEXT.filter(lambda value: not reads_as_number(value)),
                         st.dictionaries(TEXT, st.integers(), min_size=1),
                         st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != int(f)))
    if kind == "list":
        return st.dictionaries(TEXT, st.integers(), min_size=1)
    if kind == "dict":
        return st.one_of(st.lists(st.integers(), min_size=1), st.integers(), st.booleans())
    return None


CASES = [(entry, name, spec) for entry, options in ENTRY_POINTS.items() for name, spec in options.items()
         if refused_values(spec) is not None]


@st.composite
def cases(draw):
    entry, name, spec = draw(st.sampled_from(CASES))
    value = draw(refused_values(spec))
    if spec.get("elements") and spec.get("type") == "list" and spec.get("choices"):
        value = [value]
    return {"entry": entry, "name": name, "spec": {name: spec}, "args": {name: value}}


VALIDATE = """
- name: Validate generated variables against the roles' argument specs
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Validate one case
      ansible.builtin.validate_argument_spec:
        argument_spec: "{{ item.spec }}"
        provided_arguments: "{{ item.args }}"
      loop: "{{ cases }}"
      loop_control:
        label: "{{ item.entry }} {{ item.name }}"
      register: results
      ignore_errors: true

    - name: Write what each case gave
      ansible.builtin.copy:
        content: >-
          {{ results.results | map(attribute='failed', default=false)
             | zip(results.results | map(attribute='msg', default='')) | list | to_json }}
        dest: "{{ out }}"
        mode: "0644"
"""


def validate(tmp_path, batch: list[dict]) -> list[tuple[bool, str]]:
    """Each case's (failed, message), from one ansible-playbook run."""
    playbook, cases_file, out = tmp_path / "validate.yml", tmp_path / "cases.json", tmp_path / "out.json"
    playbook.write_text(VALIDATE)
    cases_file.write_text(json.dumps({"cases": batch, "out": str(out)}, allow_nan=False))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_LOCALHOST_WARNING="false")
    proc = subprocess.run([str(REPO / ".venv/bin/ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"@{cases_file}", str(playbook)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return [tuple(pair) for pair in json.loads(out.read_text())]


def test_every_generated_bad_variable_is_refused_naming_it(tmp_path):
    """Hypothesis generates the cases; one ansible-playbook run validates them all."""
    batch: list[dict] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(cases())
    def collect(case):
        batch.append(case)

    collect()
    outcomes = validate(tmp_path, batch)
    assert len(outcomes) == len(batch) >= min(EXAMPLES, 20)
    for case, (failed, message) in zip(batch, outcomes):
        assert failed and case["name"] in message, (case, message)
    print(f"\nargument-spec bad-input cases run: {len(batch)} over {len({c['name'] for c in batch})} variables "
          f"of {len(ENTRY_POINTS)} entry points")


def test_every_default_passes_its_own_spec(tmp_path):
    """The validator accepts what the specs document, so the refusals above are the values' fault."""
    batch = [{"entry": entry, "name": name, "spec": {name: spec}, "args": {name: spec["default"]}}
             for entry, options in ENTRY_POINTS.items() for name, spec in options.items()
             if "default" in spec and "{{" not in str(spec["default"])]
    refused = [(case["name"], message) for case, (failed, message) in zip(batch, validate(tmp_path, batch)) if failed]
    assert len(batch) > 40 and refused == []


ROLE_CALL = """
- name: Call a role with one bad variable
  hosts: localhost
  gather_facts: false
  roles:
    - role: k3s_gvisor.node.{role}
"""


@pytest.mark.parametrize("role, variable, value", [
    ("gvisor_preflight", "runc_gvisor_runtime", "podman"),
    ("runc_gvisor", "runc_gvisor_runc_source", "ftp"),
    ("engine", "container_engine", "docker"),
    ("verify", "verify_network", "wifi"),
])
def test_a_role_with_a_bad_variable_stops_before_its_first_task(tmp_path, role, variable, value):
    playbook = tmp_path / "call.yml"
    playbook.write_text(ROLE_CALL.format(role=role))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_LOCALHOST_WARNING="false")
    proc = subprocess.run([str(REPO / ".venv/bin/ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}", "-e", json.dumps({variable: value}),
                           str(playbook)],
                          capture_output=True, text=True, env=env, timeout=300)
    result = json.loads(proc.stdout)
    tasks = result["plays"][0]["tasks"]
    assert proc.returncode == 2 and len(tasks) == 1, [t["task"]["name"] for t in tasks]
    outcome = tasks[0]["hosts"]["localhost"]
    assert outcome["failed"] and variable in outcome["msg"] and value in outcome["msg"], outcome["msg"]
    assert result["stats"]["localhost"]["changed"] == 0
