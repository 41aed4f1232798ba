"""Renders the chart the way `helm install` would, for tests/helm.rs.

stdin: {"chart": DIR, "values": {...}, "release": NAME, "namespace": NS,
        "kubernetes": "1.35.0"}
stdout: {"lint": {...}, "manifests": {template: text}, "objects": [...],
         "unvalidated": ["Kind/name", ...]} or {"error": "..."} when Helm refuses the
values (the schema, or a template's fail), so the test can read the message.

Helm is helm-python-sdk (Helm's Go library, offline: `lookup` finds nothing, as in
`helm template`); every object is checked against the Kubernetes OpenAPI schema of
that version by kubernetes-validate in strict mode (unknown fields are errors). Kinds
it has no schema for (CRDs such as ServiceMonitor) are listed, not passed silently.
"""

import json
import sys

import helm_python as helm
import kubernetes_validate
import yaml


def main() -> None:
    req = json.load(sys.stdin)
    lint = helm.lint(req["chart"], req["values"], strict=True, namespace=req["namespace"])
    try:
        with helm.Chart.load(req["chart"]) as chart:
            chart.validate_schema(req["values"])
            manifests = chart.render(
                req["values"], name=req["release"], namespace=req["namespace"], is_install=True
            )
    except helm.HelmError as e:
        json.dump({"error": str(e), "lint": lint}, sys.stdout)
        return
    objects, unvalidated = [], []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            continue
        for obj in yaml.safe_load_all(text):
            if not obj:
                continue
            name = "%s/%s" % (obj["kind"], obj["metadata"]["name"])
            try:
                kubernetes_validate.validate(obj, req["kubernetes"], strict=True)
            except kubernetes_validate.utils.SchemaNotFoundError:
                unvalidated.append(name)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                json.dump({"error": "%s in %s does not validate: %s: %s"
                           % (name, template, path, e.message)}, sys.stdout)
                return
            objects.append(obj)
    json.dump({"lint": lint, "manifests": manifests, "objects": objects,
               "unvalidated": unvalidated}, sys.stdout)


main()
