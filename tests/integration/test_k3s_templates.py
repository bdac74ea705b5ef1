# SPDX-License-Identifier: Apache-2.0
"""The k3s containerd config templates, checked without k3s.

k3s cannot be downloaded on our machines, so each template goes through the
three steps k3s and containerd would take, with real tools wherever one
exists here:

1. Ansible renders the engine role's config-v3.toml.tmpl and config.toml.tmpl
   (ansible-playbook, ansible.builtin.template: the same Jinja2 environment and
   `#jinja2:` header handling the engine role gets), for a gVisor host and a
   plain one. The output is a Go template.
2. tests/fixtures/k3s-base/render (Go, text/template) executes that Go template
   as k3s does, with a stand-in for k3s's own "base" template
   (tests/fixtures/k3s-base/base-v3.toml.tmpl, base-v2.toml.tmpl; they name
   the k3s file and commit they follow) and data shaped like what k3s computes
   on such a host.
3. The result is parsed (tomllib) and loaded by the real containerd of the
   matching major version, from the node images: 2.1.9 (sid) for version 3,
   1.7.24 (trixie) for version 2. `containerd config dump` must accept it and
   show runc-gvisor with its options; then containerd is started with it
   inside a gVisor node, where its CRI plugin must start with runc-gvisor as
   the default runtime (the effective default of a version-2 config is only
   decided there).

The test can fail: a template that re-declares a table the stand-in emits is
refused by tomllib and by both containerds, and containerd 2.x under gVisor
refuses enable_unprivileged_ports = true (B5); both are asserted below.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass

import pytest
import yaml

from conftest import REPO, VENV_BIN, runtime_registered

TEMPLATES = REPO / "roles" / "engine" / "templates"
FIXTURES = REPO / "tests" / "fixtures" / "k3s-base"

ROLE_DEFAULTS = yaml.safe_load((REPO / "roles" / "engine" / "defaults" / "main.yml").read_text())
RUNTIME = ROLE_DEFAULTS["engine_runtime_name"]
# The runtime role's wrapper, which the engine role passes to the templates (runc_gvisor_result.wrapper).
WRAPPER = yaml.safe_load((REPO / "roles" / "runc_gvisor" / "defaults" / "main.yml").read_text())["runc_gvisor_wrapper_path"]
# The engine's own pause image (built and imported by the engine stage), pinned on offline hosts.
PAUSE_PINNED = ROLE_DEFAULTS["engine_sandbox_image"]
PAUSE_K3S_DEFAULT = "rancher/mirrored-pause:3.6"


@dataclass(frozen=True)
class Schema:
    name: str
    template: str
    base: str
    image: str
    cri: str  # the plugin holding runtimes (and, in version 2, everything else)


V3 = Schema("v3", "config-v3.toml.tmpl", "base-v3.toml.tmpl", "k3s-gvisor/node:sid",
            "io.containerd.cri.v1.runtime")
V2 = Schema("v2", "config.toml.tmpl", "base-v2.toml.tmpl", "k3s-gvisor/node:trixie",
            "io.containerd.grpc.v1.cri")
SCHEMAS = {schema.name: schema for schema in (V3, V2)}

# The variables the engine role gives the templates on two kinds of host, from their decision records
# (snapshotter, unprivileged ports and ICMP, keyrings) and its own settings (the pinned pause image).
HOST_VARS = {
    # gVisor 20240729: overlay mounts fail (B7), uname 4.4.0 (B5), offline.
    # It keeps every session keyring (B15): containers keep the shim's.
    "gvisor": {"engine_snapshotter": "native", "engine_unprivileged_ports_icmp": False,
               "engine_sandbox_image": PAUSE_PINNED, "engine_no_new_keyring": True},
    # A plain kernel with working overlayfs and a registry in reach.
    "plain": {"engine_snapshotter": "overlayfs", "engine_unprivileged_ports_icmp": True,
              "engine_sandbox_image": "", "engine_no_new_keyring": False},
}
COMMON_VARS = {"engine_runtime_name": RUNTIME, "engine_wrapper_path": WRAPPER}


def k3s_data(host: str, **changes) -> dict:
    """What k3s puts into its ContainerdConfig on HOST, started as docs/K3S.md says."""
    node = {
        "SELinux": False,
        "DefaultRuntime": "",
        "Containerd": {
            "Address": "/run/k3s/containerd/containerd.sock",
            "Root": "/var/lib/rancher/k3s/agent/containerd",
            "State": "/run/k3s/containerd",
            "Opt": "/var/lib/rancher/k3s/agent/containerd",
            "Registry": "/var/lib/rancher/k3s/agent/etc/containerd/certs.d",
        },
        "AgentConfig": {
            "CNIBinDir": "/var/lib/rancher/k3s/data/cni",
            "CNIConfDir": "/var/lib/rancher/k3s/agent/etc/cni/net.d",
        },
    }
    data = {"Program": "k3s", "NodeConfig": node}
    if host == "gvisor":
        # --snapshotter=native --pause-image=...; kernel.CheckKernelVersion(4, 11, 0)
        # is false on 4.4.0; no systemd, so cgroupfs; crun found on disk (sid has it);
        # a registries.yaml with credentials.
        node["AgentConfig"].update(Snapshotter="native", PauseImage=PAUSE_PINNED)
        data.update(EnableUnprivileged=False, SystemdCgroup=False,
                    ExtraRuntimes={"crun": {"RuntimeType": "io.containerd.runc.v2",
                                            "BinaryName": "/usr/bin/crun"}},
                    PrivateRegistryConfig={"Configs": {"registry.example:5000": {
                        "Auth": {"Username": "puller", "Password": "secret"}}}})
    else:
        # k3s's defaults, under systemd on a 6.x kernel.
        node["AgentConfig"].update(Snapshotter="overlayfs", PauseImage=PAUSE_K3S_DEFAULT)
        data.update(EnableUnprivileged=True, SystemdCgroup=True)
    for path, value in changes.items():
        target = data
        *parents, leaf = path.split("__")
        for key in parents:
            target = target[key]
        target[leaf] = value
    return data


# --- the three steps ------------------------------------------------------


@pytest.fixture(scope="module")
def ansible_rendered(tmp_path_factory) -> dict[tuple[str, str], str]:
    """{(schema, host): Go template text} from one ansible-playbook run."""
    work = tmp_path_factory.mktemp("ansible")
    plays = []
    for host, host_vars in HOST_VARS.items():
        plays.append({
            "name": f"render for a {host} host",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {**COMMON_VARS, **host_vars},
            "tasks": [{
                "name": f"template {schema.template}",
                "ansible.builtin.template": {
                    "src": str(TEMPLATES / schema.template),
                    "dest": str(work / f"{schema.name}-{host}.tmpl"),
                    "mode": "0644",
                },
            } for schema in SCHEMAS.values()],
        })
    playbook = work / "render.yml"
    playbook.write_text(yaml.safe_dump(plays, sort_keys=False))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,",
         "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {(schema, host): (work / f"{schema}-{host}.tmpl").read_text()
            for schema in SCHEMAS for host in HOST_VARS}


@pytest.fixture(scope="module")
def go_render(tmp_path_factory):
    """render(schema, user_template, data) -> CompletedProcess of the Go renderer."""
    if shutil.which("go") is None:
        pytest.fail("go is needed to render Go templates (scripts/bootstrap installs it)")
    work = tmp_path_factory.mktemp("go")
    binary = work / "render"
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=FIXTURES / "render",
                   check=True, capture_output=True, text=True, timeout=300)
    counter = iter(range(1_000_000))

    def render(schema: Schema, user: str, data: dict) -> subprocess.CompletedProcess:
        data_file = work / f"data-{next(counter)}.json"
        data_file.write_text(json.dumps(data))
        return subprocess.run([str(binary), "-base", str(FIXTURES / schema.base),
                               "-data", str(data_file)],
                              input=user, capture_output=True, text=True, timeout=60)

    return render


def rendered(go_render, schema: Schema, user: str, data: dict) -> str:
    proc = go_render(schema, user, data)
    assert proc.returncode == 0, f"k3s would fail to render this:\n{proc.stderr}"
    return proc.stdout


def in_node(image: str, script: str, config: str, runtime: str = "runc"):
    """Run SCRIPT in a throwaway container of IMAGE with CONFIG as /tmp/c.toml."""
    if subprocess.run(["docker", "image", "inspect", image],
                      capture_output=True).returncode != 0:
        pytest.skip(f"node image {image} is missing (scripts/gvisor-node image)")
    return subprocess.run(
        ["docker", "run", "--rm", "-i", f"--runtime={runtime}", image, "sh", "-c",
         "cat > /tmp/c.toml && " + script],
        input=config, capture_output=True, text=True, timeout=120)


def config_dump(schema: Schema, config: str) -> subprocess.CompletedProcess:
    return in_node(schema.image, "containerd --config /tmp/c.toml config dump", config)


BOOT = ("(containerd --config /tmp/c.toml >/tmp/log 2>&1 &) && "
        "for i in $(seq 50); do grep -q 'successfully booted' /tmp/log && break; "
        "sleep 0.2; done; cat /tmp/log")


def boot_in_gvisor(schema: Schema, config: str) -> str:
    """containerd's log after starting it with CONFIG inside a gVisor node."""
    if not runtime_registered("runsc"):
        pytest.skip("docker has no runtime runsc (scripts/gvisor-node setup)")
    proc = in_node(schema.image, BOOT, config, runtime="runsc")
    assert "successfully booted" in proc.stdout, proc.stdout + proc.stderr
    return proc.stdout


# --- helpers on TOML text -----------------------------------------------------

HEADER = re.compile(r"^\s*\[[^\[].*\]\s*$")


def table_headers(text: str) -> list[tuple[str, ...]]:
    """The key path of every [table] header in TEXT, in order (quoting normalised)."""
    paths = []
    for line in text.splitlines():
        if HEADER.match(line):
            node, path = tomllib.loads(line), []
            while node:
                (key, node), = node.items()
                path.append(key)
            paths.append(tuple(path))
    return paths


def base_only(go_render, schema: Schema, data: dict) -> str:
    return rendered(go_render, schema, '{{ template "base" . }}', data)


# What our templates add to k3s's tables, and nothing else.
def expected_additions(schema: Schema, default_runtime_flag: bool) -> set[tuple[str, ...]]:
    runtimes = ("plugins", schema.cri, "containerd", "runtimes", RUNTIME)
    added = {runtimes, runtimes + ("options",)}
    if not default_runtime_flag:
        if schema is V3:
            added.add(("plugins", schema.cri, "containerd"))
        else:
            default = ("plugins", schema.cri, "containerd", "default_runtime")
            added |= {default, default + ("options",)}
    return added


CASES = [
    pytest.param(schema, host, flag, id=f"{schema}-{host}" + ("-default-runtime-flag" if flag else ""))
    for schema in SCHEMAS for host in HOST_VARS for flag in (False, True)
    if not (flag and host == "plain")
]


def case_data(host: str, flag: bool) -> dict:
    # flag: a k3s that would accept --default-runtime=runc-gvisor (today's refuses it).
    return k3s_data(host, NodeConfig__DefaultRuntime=RUNTIME if flag else "")


# --- tests --------------------------------------------------------------------


def test_jinja_leaves_go_template_intact(ansible_rendered):
    for (schema, host), text in ansible_rendered.items():
        assert "[%" not in text and "%]" not in text, (schema, host)
        assert '{{ template "base" . }}' in text, (schema, host)
        assert "{{ .SystemdCgroup }}" in text, (schema, host)
        assert f'runtimes."{RUNTIME}"' in text, (schema, host)


@pytest.mark.parametrize("schema,host,flag", CASES)
def test_adds_only_new_tables(ansible_rendered, go_render, schema, host, flag):
    schema = SCHEMAS[schema]
    data = case_data(host, flag)
    base = table_headers(base_only(go_render, schema, data))
    config = rendered(go_render, schema, ansible_rendered[(schema.name, host)], data)
    tomllib.loads(config)  # a duplicate table would raise here
    ours = table_headers(config)
    assert len(ours) == len(set(ours)), "a table is declared twice"
    assert set(base) <= set(ours), "a table of k3s's base went missing"
    assert set(ours) - set(base) == expected_additions(schema, flag)
    # The stand-in does emit the tables a naive template would re-declare.
    cri = ("plugins", schema.cri)
    assert cri in base and cri + ("containerd", "runtimes", "runc", "options") in base
    assert (cri + ("containerd",) in base) == (schema is V2 or flag)


@pytest.mark.parametrize("schema,host,flag", CASES)
def test_containerd_accepts_it(ansible_rendered, go_render, schema, host, flag):
    schema = SCHEMAS[schema]
    data = case_data(host, flag)
    config = rendered(go_render, schema, ansible_rendered[(schema.name, host)], data)
    proc = config_dump(schema, config)
    assert proc.returncode == 0, proc.stderr
    dump = tomllib.loads(proc.stdout)
    cri = dump["plugins"][schema.cri]
    runtimes = cri["containerd"]["runtimes"]
    wanted_options = {"BinaryName": WRAPPER, "NoNewKeyring": HOST_VARS[host]["engine_no_new_keyring"],
                      "SystemdCgroup": data["SystemdCgroup"]}

    ours = runtimes[RUNTIME]
    assert ours["runtime_type"] == "io.containerd.runc.v2"
    assert wanted_options.items() <= ours["options"].items()
    assert runtimes["runc"]["options"].get("BinaryName", "") == ""  # k3s's runc untouched

    if schema is V3:
        images = dump["plugins"]["io.containerd.cri.v1.images"]
        assert cri["containerd"]["default_runtime_name"] == RUNTIME
        snapshotter, sandbox = images["snapshotter"], images["pinned_images"]["sandbox"]
    else:
        default = cri["containerd"]["default_runtime"]
        if flag:
            assert cri["containerd"]["default_runtime_name"] == RUNTIME
            assert default["runtime_type"] == ""
        else:
            # Made the default when the CRI plugin starts: test_cri_plugin_starts_in_gvisor.
            assert default["runtime_type"] == "io.containerd.runc.v2"
            assert wanted_options.items() <= default["options"].items()
        snapshotter, sandbox = cri["containerd"]["snapshotter"], cri["sandbox_image"]
    runtime_plugin = dump["plugins"][schema.cri]
    if host == "gvisor":
        assert snapshotter == "native"
        assert sandbox == PAUSE_PINNED
        assert runtime_plugin["enable_unprivileged_ports"] is False
        assert runtime_plugin["enable_unprivileged_icmp"] is False
    else:
        assert snapshotter == "overlayfs"
        assert sandbox == PAUSE_K3S_DEFAULT
        assert runtime_plugin["enable_unprivileged_ports"] is True


def cri_config_v3(log: str) -> dict:
    """The CRI runtime config containerd 2.x logs as it starts the plugin."""
    match = re.search(r'msg="starting cri plugin" config=("(?:[^"\\]|\\.)*")', log)
    assert match, log
    return json.loads(ast.literal_eval(match.group(1)))


def test_cri_plugin_starts_in_gvisor_v3(ansible_rendered, go_render):
    config = rendered(go_render, V3, ansible_rendered[("v3", "gvisor")], k3s_data("gvisor"))
    log = boot_in_gvisor(V3, config)
    assert "invalid plugin config" not in log, log
    cri = cri_config_v3(log)
    assert cri["containerd"]["defaultRuntimeName"] == RUNTIME
    runtime = cri["containerd"]["runtimes"][RUNTIME]
    assert runtime["runtimeType"] == "io.containerd.runc.v2"
    assert runtime["options"] == {"BinaryName": WRAPPER, "NoNewKeyring": True,
                                  "SystemdCgroup": False}


def test_cri_plugin_starts_in_gvisor_v2(ansible_rendered, go_render):
    config = rendered(go_render, V2, ansible_rendered[("v2", "gvisor")], k3s_data("gvisor"))
    log = boot_in_gvisor(V2, config)
    match = re.search(r"Start cri plugin with config (.*)", log)
    assert match, log
    started = match.group(1)
    # containerd 1.7 turns the deprecated default_runtime into the default handler "default".
    assert "DefaultRuntimeName:default " in started, started
    assert ("DefaultRuntime:{Type:io.containerd.runc.v2 " in started
            and f"Options:map[BinaryName:{WRAPPER} NoNewKeyring:true SystemdCgroup:false]"
            in started), started
    assert "Snapshotter:native " in started and f"SandboxImage:{PAUSE_PINNED} " in started


def test_b5_matters_in_gvisor(ansible_rendered, go_render):
    """With unprivileged ports on (what k3s emits on a kernel >= 4.11) containerd
    2.x under gVisor drops its CRI plugin: the base's kernel check is what saves us."""
    # Rendered with the plain host's variables, which carry no B5 check.
    config = rendered(go_render, V3, ansible_rendered[("v3", "plain")],
                      k3s_data("gvisor", EnableUnprivileged=True))
    assert "enable_unprivileged_ports = true" in config
    log = boot_in_gvisor(V3, config)
    assert ("invalid plugin config: unprivileged_icmp and unprivileged_port require "
            "kernel version greater than or equal to 4.11") in log, log


@pytest.mark.parametrize("schema", SCHEMAS)
def test_redeclared_table_is_refused(ansible_rendered, go_render, schema):
    """What a naive template does (set a key by re-opening k3s's table) must fail
    every check above, or those checks prove nothing."""
    schema = SCHEMAS[schema]
    naive = {
        V3: "\n[plugins.'io.containerd.cri.v1.runtime']\n  enable_unprivileged_ports = false\n",
        V2: ('\n[plugins."io.containerd.grpc.v1.cri".containerd]\n'
             f'  default_runtime_name = "{RUNTIME}"\n'),
    }[schema]
    user = ansible_rendered[(schema.name, "gvisor")] + naive
    config = rendered(go_render, schema, user, k3s_data("gvisor"))
    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads(config)
    proc = config_dump(schema, config)
    assert proc.returncode != 0
    assert re.search(r"already exists|duplicated tables", proc.stderr), proc.stderr


GUARDS = [
    # (schema, host vars, k3s data changes, words the error must contain)
    (schema, "gvisor", {"NodeConfig__AgentConfig__Snapshotter": "overlayfs"},
     "--snapshotter=native")
    for schema in SCHEMAS
] + [
    (schema, "gvisor", {"NodeConfig__AgentConfig__PauseImage": PAUSE_K3S_DEFAULT},
     f"--pause-image={PAUSE_PINNED}")
    for schema in SCHEMAS
] + [
    (schema, host, {"NodeConfig__DefaultRuntime": "crun"}, "without --default-runtime")
    for schema in SCHEMAS for host in HOST_VARS
] + [
    ("v3", "gvisor", {"EnableUnprivileged": True}, "probe B5"),
]


@pytest.mark.parametrize("schema,host,changes,words", GUARDS,
                         ids=[f"{g[0]}-{g[1]}-{next(iter(g[2])).split('__')[-1]}"
                              for g in GUARDS])
def test_k3s_started_wrong_fails_loudly(ansible_rendered, go_render, schema, host,
                                        changes, words):
    schema = SCHEMAS[schema]
    proc = go_render(schema, ansible_rendered[(schema.name, host)],
                     k3s_data(host, **changes))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "k3s-gvisor: " in proc.stderr and words in proc.stderr, proc.stderr


def test_no_check_fires_on_a_plain_host(ansible_rendered, go_render):
    """A plain host started with k3s's defaults renders; only the runtime is added."""
    for schema in SCHEMAS.values():
        config = rendered(go_render, schema, ansible_rendered[(schema.name, "plain")],
                          k3s_data("plain"))
        assert "SystemdCgroup = true" in config.split(f'"{RUNTIME}".options]')[1]
