#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: k3s-gvisor contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: deb_packages
short_description: Install Debian packages with apt-get, without python3-apt
description:
  - Installs the named packages where dpkg says they are not installed, with C(apt-get install --no-install-recommends).
  - Updates apt's lists first only when apt offers no candidate for a missing package (minimal images ship without
    lists), and fails naming the packages apt cannot offer.
  - Unlike M(ansible.builtin.apt) it needs no C(python3-apt) on the node, which that module installs first; nodes of this
    project have Python's standard library only and may be offline. It removes nothing and upgrades nothing.
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
extends_documentation_fragment:
  - k3s_gvisor.node.attributes
options:
  name:
    description: Package names.
    type: list
    elements: str
    required: true
author:
  - k3s-gvisor contributors
notes:
  - Needs root. In check mode it reports which packages it would install and changes nothing (apt's lists included).
"""

EXAMPLES = r"""
- name: Install crun from the host's apt
  k3s_gvisor.node.deb_packages:
    name: [crun]
"""

RETURN = r"""
installed:
  description: The packages that were (or, in check mode, would be) installed.
  returned: always
  type: list
  elements: str
  sample: [crun]
updated_lists:
  description: Whether apt-get update ran first.
  returned: always
  type: bool
"""

import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.k3s_gvisor.node.plugins.module_utils.apt_packages import Apt, AptError, ensure_installed

PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


def main():
    module = AnsibleModule(argument_spec=dict(name=dict(type="list", elements="str", required=True)),
                           supports_check_mode=True)
    names = module.params["name"]
    bad = [name for name in names if not PACKAGE_NAME.match(name)]
    if bad or not names:
        module.fail_json(msg="name must list Debian package names, got %s" % (bad or names))
    try:
        result = ensure_installed(Apt(), names, module.check_mode)
    except AptError as error:
        module.fail_json(msg=str(error), installed=[], updated_lists=False)
    except OSError as error:
        module.fail_json(msg="this host has no apt-get or dpkg-query (%s): install %s by hand" % (error, ", ".join(names)))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
