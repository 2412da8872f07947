"""Validates rendered Kubernetes manifests offline (run by `cargo xtask deploy-check`).

- Built-in kinds: against Kubernetes' own schemas for each version asked, strict (unknown
  fields are errors, as with `kubectl apply`'s default server-side field validation), via
  kubernetes-validate, which ships those schemas.
- Custom resources: against the openAPIV3Schema of their CustomResourceDefinition (from the
  files themselves or from --crd), also strict unless the schema preserves unknown fields.
  CEL rules (x-kubernetes-validations) are not evaluated.
- An object of a kind no schema knows is an error, not a warning: it would be the one
  object nobody checked.
- Every namespaced object names its namespace (so `kubectl apply` never drops it into the
  caller's current namespace) and no cluster-scoped one does; no Role or ClusterRole grants
  a wildcard.

Writes a JSON summary (file -> objects) for the caller's own checks.
"""

import argparse
import json
import os
import sys

import jsonschema
import kubernetes_validate
import yaml

# Built-in kinds that are cluster-scoped; everything else built-in is namespaced.
CLUSTER_SCOPED = {
    "APIService",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "MutatingWebhookConfiguration",
    "Namespace",
    "Node",
    "PersistentVolume",
    "PriorityClass",
    "StorageClass",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
}


def documents(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def yaml_files(path):
    if os.path.isdir(path):
        for root, _, names in os.walk(path):
            for name in sorted(names):
                if name.endswith((".yaml", ".yml")) and name != "kustomization.yaml":
                    yield os.path.join(root, name)
    else:
        yield path


def group_of(api_version):
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def version_of(api_version):
    return api_version.split("/", 1)[-1]


def structural_to_jsonschema(schema, root=False):
    """An OpenAPI v3 structural schema as JSON Schema (draft 4, whose boolean
    exclusiveMinimum/Maximum OpenAPI 3.0 shares)."""
    out = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {n: structural_to_jsonschema(p) for n, p in value.items()}
        elif key == "items":
            out[key] = structural_to_jsonschema(value)
        elif key == "additionalProperties":
            out[key] = (
                value if isinstance(value, bool) else structural_to_jsonschema(value)
            )
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [structural_to_jsonschema(s) for s in value]
        elif key == "not":
            out[key] = structural_to_jsonschema(value)
        elif key.startswith("x-kubernetes-") or key in (
            "description",
            "example",
            "externalDocs",
            "nullable",
            "default",
            "format",
        ):
            continue
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if schema.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if root:
        # The API server owns these on every object.
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


class Crds:
    def __init__(self):
        self.by_kind = {}

    def add(self, crd):
        spec = crd.get("spec", {})
        group, kind = spec.get("group"), spec.get("names", {}).get("kind")
        for version in spec.get("versions", []):
            if not version.get("served"):
                continue
            schema = version.get("schema", {}).get("openAPIV3Schema")
            self.by_kind[(group, version["name"], kind)] = (
                spec.get("scope"),
                schema,
            )

    def get(self, api_version, kind):
        return self.by_kind.get((group_of(api_version), version_of(api_version), kind))


def describe(obj):
    meta = obj.get("metadata") or {}
    where = meta.get("namespace")
    name = meta.get("name", "?")
    return f"{obj.get('kind', '?')} {where + '/' if where else ''}{name}"


def check_object(obj, crds, versions):
    """Error messages for one object, empty when it is valid."""
    if not isinstance(obj, dict) or not obj.get("apiVersion") or not obj.get("kind"):
        return ["not a Kubernetes object (no apiVersion or kind)"]
    if not (obj.get("metadata") or {}).get("name"):
        return ["no metadata.name"]
    errors = []
    api_version, kind = obj["apiVersion"], obj["kind"]
    namespace = obj["metadata"].get("namespace")
    custom = crds.get(api_version, kind)
    if custom is not None:
        scope, schema = custom
        namespaced = scope == "Namespaced"
        if schema is None:
            errors.append(f"the CRD of {api_version} {kind} has no schema")
        else:
            validator = jsonschema.Draft4Validator(
                structural_to_jsonschema(schema, root=True)
            )
            for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.path)):
                path = ".".join(str(p) for p in error.absolute_path) or "(root)"
                errors.append(f"{path}: {error.message}")
    else:
        namespaced = kind not in CLUSTER_SCOPED
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(p) for p in error.path) or "(root)"
                errors.append(f"Kubernetes {version}: {path}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError:
                errors.append(
                    f"Kubernetes {version} has no {api_version} {kind} and no CRD "
                    "given defines it"
                )
    if namespaced and not namespace:
        errors.append("namespaced, but names no metadata.namespace")
    if not namespaced and namespace:
        errors.append(f"cluster-scoped, but names namespace {namespace}")
    if kind in ("Role", "ClusterRole"):
        for i, rule in enumerate(obj.get("rules") or []):
            for field in ("apiGroups", "resources", "verbs"):
                if "*" in (rule.get(field) or []):
                    errors.append(f"rules.{i}.{field}: a wildcard grants more than asked")
    return errors


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kubernetes-version", action="append", required=True)
    parser.add_argument("--crd", action="append", default=[])
    parser.add_argument("--summary", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    crds = Crds()
    for path in args.crd:
        for file in yaml_files(path):
            for doc in documents(file):
                if doc.get("kind") == "CustomResourceDefinition":
                    crds.add(doc)
    loaded = {file: documents(file) for file in args.files}
    for docs in loaded.values():
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                crds.add(doc)

    failures = 0
    summary = {}
    for file, docs in loaded.items():
        summary[file] = []
        problems = 0
        for doc in docs:
            errors = check_object(doc, crds, args.kubernetes_version)
            what = describe(doc) if isinstance(doc, dict) else repr(doc)[:60]
            for error in errors:
                print(f"{file}: {what}: {error}")
            problems += len(errors)
            if isinstance(doc, dict):
                meta = doc.get("metadata") or {}
                summary[file].append(
                    {
                        "apiVersion": doc.get("apiVersion"),
                        "kind": doc.get("kind"),
                        "namespace": meta.get("namespace"),
                        "name": meta.get("name"),
                        "containers": containers(doc),
                    }
                )
        versions = ", ".join(args.kubernetes_version)
        verdict = f"{problems} problems" if problems else "valid"
        print(f"{file}: {len(docs)} objects, {verdict} (Kubernetes {versions})")
        failures += problems
    with open(args.summary, "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    if failures:
        print(f"{failures} problems")
        sys.exit(1)


def containers(obj):
    """Image, environment variable names, images named by environment and arguments of
    each container of a pod template or pod: the caller checks them against the binaries'
    flags and the release's tag."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("containers", "initContainers", "ephemeralContainers"):
                for container in node.get(key) or []:
                    if isinstance(container, dict) and "image" in container:
                        found.append(
                            {
                                "image": container["image"],
                                "env": [e.get("name") for e in container.get("env") or []],
                                # Images named by environment (WEFT_WAYPOINT_IMAGE): held to
                                # the release's tag like the containers' own.
                                "image_env": [
                                    e["value"]
                                    for e in container.get("env") or []
                                    if str(e.get("name", "")).endswith("_IMAGE") and "value" in e
                                ],
                                "args": [str(a) for a in container.get("args") or []],
                            }
                        )
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(obj.get("spec"))
    return found


if __name__ == "__main__":
    main()
