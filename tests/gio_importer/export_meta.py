"""Run gio-importer's SaaS metadata export against a server: ``python export_meta.py URI TOKEN PROJECT OUT``.

Run by tests/test_gio_importer.py in gio-importer's own venv. The package reads its conf.cfg when imported; the
settings are then set on its config class, which its HTTP helper reads at each call."""

import sys

from importers.common.config_util import SaasConfig
from importers.saas_export import saas_meta

uri, token, project, out = sys.argv[1:5]
SaasConfig.uri = uri if uri.endswith("/") else uri + "/"
SaasConfig.token = token
SaasConfig.uid = project
saas_meta.getSaasMeta(out)
