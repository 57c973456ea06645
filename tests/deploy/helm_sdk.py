"""Lints (strict) and renders airlock's chart with Helm's own Go SDK, through PyPI's
helm-python-sdk (libhelm_c, no helm binary): what `helm lint --strict` and `helm template`
do. tests/deploy.rs runs it with the venv scripts/test.sh makes, and reads its JSON."""
import json
import sys

import helm_python as helm

chart_dir, values = sys.argv[1], json.loads(sys.argv[2])
out = {"sdk": helm.helm_sdk_version(), "lint": helm.lint(chart_dir, values, strict=True)}
try:
    out["rendered"] = helm.Chart.load(chart_dir).render(
        values, name="airlock", namespace="tre", is_install=True
    )
except Exception as e:  # a render error is a finding for the test, not a crash
    out["render_error"] = str(e)
print(json.dumps(out))
