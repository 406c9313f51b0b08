#!/usr/bin/env python3
"""Writes an SPDX 2.3 JSON bill of materials from an image root's own dpkg database.

  sbom.py ROOT RUNTIME_ID EPOCH > sbom.spdx.json

Deterministic: the same installed packages and EPOCH give the same bytes (sorted packages, sorted keys,
creation time = EPOCH), so the SBOM's SHA-256 is as reproducible as the root filesystem layer.
"""
import datetime
import hashlib
import json
import re
import sys
import urllib.parse


def installed(status_path):
    with open(status_path, encoding="utf-8") as f:
        for paragraph in f.read().split("\n\n"):
            fields = {}
            for line in paragraph.splitlines():
                if line[:1] in (" ", "\t") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key] = value.strip()
            if fields.get("Status", "").endswith(" installed") and "Package" in fields:
                yield fields


def spdx_id(name, arch):
    return "SPDXRef-Package-deb-" + re.sub(r"[^A-Za-z0-9.-]", "-", f"{name}-{arch}")


def main(root, runtime, epoch):
    created = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    packages = []
    for p in sorted(installed(f"{root}/var/lib/dpkg/status"), key=lambda p: (p["Package"], p.get("Architecture", ""))):
        name, version, arch = p["Package"], p["Version"], p.get("Architecture", "all")
        purl = "pkg:deb/debian/{}@{}?arch={}&distro=debian-12".format(
            name, urllib.parse.quote(version, safe=".-_~"), arch)
        package = {
            "SPDXID": spdx_id(name, arch),
            "name": name,
            "versionInfo": version,
            "supplier": "Organization: " + p["Maintainer"] if p.get("Maintainer") else "NOASSERTION",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl}],
        }
        if p.get("Source"):
            package["sourceInfo"] = "built from Debian source package " + p["Source"]
        packages.append(package)
    inventory = "".join(f"{p['name']} {p['versionInfo']}\n" for p in packages)
    document = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"sandbox-audited runtime {runtime}",
        "documentNamespace": f"urn:sandbox-audited:runtime:{runtime}:packages:{hashlib.sha256(inventory.encode()).hexdigest()}",
        "creationInfo": {"created": created, "creators": ["Tool: sandbox-audited build-images.sh"]},
        "packages": packages,
        "relationships": [
            {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": p["SPDXID"]}
            for p in packages
        ],
    }
    sys.stdout.write(json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.stderr.write(__doc__)
        sys.exit(2)
    main(*sys.argv[1:])
