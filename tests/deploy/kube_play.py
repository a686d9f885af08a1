#!/usr/bin/env python3
"""Makes the manifests of deploy/k8s playable by `podman kube play` (podman 4.3, Debian 12).

Usage: kube_play.py [--set KEY=VALUE]... OUT_DIR IMAGE SECRETS_DIR MANIFEST...

Reads the manifests (the multi-document YAML files of deploy/k8s) and writes OUT_DIR/kube.yaml,
the same objects with only what podman 4.3 cannot take, or what names this deployment, changed:
  - every container image named cqrs-pipeline:<tag> is IMAGE (the image built from the Dockerfile);
  - the ConfigMap keys given with --set KEY=VALUE are replaced (the brokers and replication of
    the test's one-node Kafka; the manifests' PostgreSQL host names are given to the test's
    server as network aliases, so they stay);
  - a Job becomes a Pod of its template (kube play runs no Job);
  - containerPorts are left out, and the probes that name one given its number: podman 4.3
    publishes every containerPort on the host's port of the same number (Kubernetes publishes
    none), so that two replicas could not both start, and the ports would be open beyond the host;
  - the Secrets are left out, and their values, read from SECRETS_DIR/<secret>/<key>, are written
    as OUT_DIR/secret-<name>.json for `podman secret create`, in the two shapes podman 4.3 reads:
    for a secret taken by secretKeyRef, a JSON object of base64 values (a Secret that kube play
    stores itself cannot be read back, podman issue 16269); for a secret mounted as a volume, a
    Secret object whose data holds the values as they are (4.3 writes them without decoding).
A secret used both ways, or one whose value is missing, is an error. Exit status 0, or 1 with a
message.
"""
import argparse
import base64
import copy
import json
import os
import sys

import yaml


def fail(msg):
    print(f"kube_play.py: {msg}", file=sys.stderr)
    sys.exit(1)


def pod_specs(doc):
    kind = doc.get("kind")
    if kind == "Pod":
        return [doc["spec"]]
    if kind in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        return [doc["spec"]["template"]["spec"]]
    return []


def main():
    parser = argparse.ArgumentParser(description="Makes deploy/k8s playable by podman kube play.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("out_dir")
    parser.add_argument("image")
    parser.add_argument("secrets_dir")
    parser.add_argument("manifests", nargs="+")
    args = parser.parse_args()
    out_dir, image, secrets_dir = args.out_dir, args.image, args.secrets_dir
    overrides = {}
    for arg in args.set:
        key, sep, value = arg.partition("=")
        if not sep:
            fail(f"{arg!r} is not KEY=VALUE")
        overrides[key] = value

    docs = []
    for path in args.manifests:
        try:
            with open(path) as f:
                docs += [d for d in yaml.safe_load_all(f) if d]
        except (OSError, yaml.YAMLError) as e:
            fail(f"{path}: {e}")
    secrets, out = {}, []
    env_use, volume_use = set(), set()
    for doc in docs:
        for spec in pod_specs(doc):
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                if c.get("image", "").startswith("cqrs-pipeline:"):
                    c["image"] = image
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        env_use.add(ref["name"])
                ports = {p["name"]: p["containerPort"] for p in c.pop("ports", []) if "name" in p}
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    get = c.get(probe, {}).get("httpGet")
                    if get and isinstance(get.get("port"), str):
                        if get["port"] not in ports:
                            fail(f"{c['name']}: {probe} names no port of the container")
                        get["port"] = ports[get["port"]]
            for v in spec.get("volumes", []):
                if "secret" in v:
                    volume_use.add(v["secret"]["secretName"])
        kind = doc.get("kind")
        if kind == "Secret":
            secrets[doc["metadata"]["name"]] = doc
            continue
        if kind == "ConfigMap":
            unknown = set(overrides) - set(doc.get("data", {}))
            if unknown:
                fail(f"ConfigMap {doc['metadata']['name']} has no key {sorted(unknown)}")
            doc["data"].update(overrides)
        if kind == "Job":
            template = doc["spec"]["template"]
            doc = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {**copy.deepcopy(template.get("metadata", {})),
                             "name": doc["metadata"]["name"]},
                "spec": template["spec"],
            }
        out.append(doc)

    for name, secret in secrets.items():
        if name in env_use and name in volume_use:
            fail(f"Secret {name} is used as environment and as a volume; podman 4.3 reads the two "
                 "from different shapes")
        keys = list(secret.get("stringData", {})) + list(secret.get("data", {}))
        values = {}
        for key in keys:
            path = os.path.join(secrets_dir, name, key)
            try:
                with open(path, "rb") as f:
                    values[key] = f.read()
            except OSError as e:
                fail(f"Secret {name}: no value for {key}: {e}")
        if name in volume_use:
            payload = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                       "data": {k: v.decode() for k, v in values.items()}}
        else:
            payload = {k: base64.b64encode(v).decode() for k, v in values.items()}
        with open(os.path.join(out_dir, f"secret-{name}.json"), "w") as f:
            json.dump(payload, f)

    missing = (env_use | volume_use) - set(secrets)
    if missing:
        fail(f"Secrets {sorted(missing)} are referenced but not defined")
    with open(os.path.join(out_dir, "kube.yaml"), "w") as f:
        yaml.safe_dump_all(out, f, sort_keys=False)


if __name__ == "__main__":
    main()
