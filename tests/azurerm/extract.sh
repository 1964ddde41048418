#!/usr/bin/env bash
# Reproduces tests/azurerm/schema.json and tests/azurerm/backend.json (see PROVENANCE.md).
#
#   tests/azurerm/extract.sh PROVIDER_BINARY PROVIDER_SOURCE_DIR TERRAFORM_SOURCE_DIR
#
# PROVIDER_BINARY       terraform-provider-azurerm built from the Go module proxy
# PROVIDER_SOURCE_DIR   the provider's source (its module cache folder): its argument reference
#                       (website/docs/r) gives the words the schema leaves empty
# TERRAFORM_SOURCE_DIR  github.com/hashicorp/terraform@vX source (its module cache folder), for
#                       the azurerm backend's schema (backends are not in `providers schema`)
#
# Environment: AZURERM_VERSION (the version the mirror files the binary under, default 5.2.0),
# RAYDEPLOY_TF_MIRROR (default ~/.cache/raydeploy/terraform-mirror: the filesystem mirror the
# tests use for `terraform validate`), TERRAFORM (default terraform on PATH).
#
# Offline: Terraform installs the provider from the mirror only (no registry), the render needs
# no network, and the schema is read from the binary.
set -euo pipefail

usage="usage: extract.sh PROVIDER_BINARY PROVIDER_SOURCE_DIR TERRAFORM_SOURCE_DIR"
provider_bin=${1:?$usage}
provider_src=${2:?$usage}
tf_src=${3:?$usage}
version=${AZURERM_VERSION:-5.2.0}
mirror=${RAYDEPLOY_TF_MIRROR:-$HOME/.cache/raydeploy/terraform-mirror}
terraform=${TERRAFORM:-terraform}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

# 1. The binary into a filesystem mirror (the layout `terraform providers mirror` writes).
dest="$mirror/registry.terraform.io/hashicorp/azurerm/$version/linux_amd64"
mkdir -p "$dest"
install -m 0755 "$provider_bin" "$dest/terraform-provider-azurerm_v$version"

# 2. A CLI configuration that installs azurerm from the mirror and nothing from the network.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/cli.tfrc" <<EOF
provider_installation {
  filesystem_mirror {
    path    = "$mirror"
    include = ["registry.terraform.io/hashicorp/azurerm"]
  }
}
EOF

# 3. A folder rendered by raydeploy, initialised offline (an example without a remote backend:
#    `providers schema` needs an initialised backend, and an azurerm one would need Azure).
(cd "$repo" && cargo run --quiet -- render examples/gpu-autoscaling/raydeploy.yaml --out "$work/render" >/dev/null)
export TF_CLI_CONFIG_FILE="$work/cli.tfrc" TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1
"$terraform" -chdir="$work/render/terraform" init -backend=false -input=false -no-color >"$work/init.log"
"$terraform" -chdir="$work/render/terraform" providers schema -json >"$work/full.json"
"$terraform" version -json >"$work/version.json"

# 4. Only the types raydeploy renders (templates) or names (the destructive-change guard).
types=$( (grep -ho 'resource "azurerm_[a-z_]*"' "$repo"/templates/terraform/*.tera | cut -d'"' -f2
          grep -o '"azurerm_[a-z_]*"' "$repo"/src/plan/azurerm.rs | tr -d '"') | sort -u | jq -R . | jq -sc .)
jq -S --argjson types "$types" --arg version "$version" '
  { format_version,
    provider_version: $version,
    provider_schemas: { "registry.terraform.io/hashicorp/azurerm":
      (.provider_schemas["registry.terraform.io/hashicorp/azurerm"]
       | { provider,
           resource_schemas: (.resource_schemas | with_entries(select(.key as $k | $types | index($k)))),
           data_source_schemas: (.data_source_schemas | with_entries(select(.key as $k | $types | index($k)))) }) } }
' "$work/full.json" >"$here/schema.json"

# 5. The azurerm backend's arguments, from Terraform's source: the helper/schema map in
#    internal/backend/remote-state/azure/backend.go, turned into the block form Terraform core
#    checks configurations against (internal/legacy/helper/schema/core_schema.go: a Required
#    argument with a DefaultFunc that yields a value is Optional).
python3 - "$tf_src" "$here/backend.json" <<'PY'
import json, re, sys
src, out = sys.argv[1], sys.argv[2]
text = open(f"{src}/internal/backend/remote-state/azure/backend.go").read()
version = re.search(r"terraform@(v[0-9.]+)", src)
body = text[text.index("Schema: map[string]*schema.Schema{"):]
attrs = {}
types = {"TypeString": "string", "TypeBool": "bool", "TypeInt": "number", "TypeFloat": "number"}
for m in re.finditer(r'\n\t\t\t"([a-z_]+)": \{\n(.*?)\n\t\t\t\},', body, re.S):
    name, spec = m.group(1), m.group(2)
    ty = re.search(r"Type:\s*schema\.(\w+)", spec).group(1)
    required = re.search(r"Required:\s*true", spec) is not None
    optional = re.search(r"Optional:\s*true", spec) is not None
    dflt = re.search(r"DefaultFunc:\s*schema\.(?:Multi)?EnvDefaultFunc\((.*)\),?\n", spec + "\n")
    if required and dflt and not dflt.group(1).rstrip(")").rstrip().endswith("nil"):
        required, optional = False, True
    desc = re.search(r'Description:\s*"((?:[^"\\]|\\.)*)"', spec)
    dep = re.search(r'Deprecated:\s*"((?:[^"\\]|\\.)*)"', spec)
    a = {"type": types[ty], "description_kind": "plain"}
    if desc: a["description"] = json.loads(f'"{desc.group(1)}"')
    if required: a["required"] = True
    if optional: a["optional"] = True
    if dep:
        a["deprecated"] = True
        a["description"] = (a.get("description", "") + " Deprecated: " + json.loads(f'"{dep.group(1)}"')).strip()
    attrs[name] = a
assert {"storage_account_name", "container_name", "key", "resource_group_name"} <= attrs.keys(), attrs.keys()
json.dump({"terraform_version": version.group(1).lstrip("v") if version else "unknown",
           "source": "internal/backend/remote-state/azure/backend.go",
           "block": {"attributes": attrs, "description_kind": "plain"}},
          open(out, "w"), indent=2, sort_keys=True)
open(out, "a").write("\n")
PY

# 6. The provider's argument reference for the same types: SDKv2 resources leave the schema's
#    descriptions empty, so the checker quotes these words instead. Keyed by the block an
#    argument belongs to ("" for the resource itself), from the "A `x` block supports the
#    following:" sections; "attributes" holds what the resource exports.
python3 - "$provider_src" "$here/docs.json" "$types" <<'PY'
import json, re, sys
src, out, types = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
docs = {}
for t in types:
    text = open(f"{src}/website/docs/r/{t.removeprefix('azurerm_')}.html.markdown").read()
    args, attrs, section, block = {}, {}, None, ""
    for line in text.splitlines():
        if line.startswith("## "):
            section = {"## Arguments Reference": args, "## Attributes Reference": attrs}.get(line.strip())
            block = ""
            continue
        m = re.match(r"^(?:A|An|The) `([a-z0-9_]+)` block (?:supports|exports|as defined)", line)
        if m:
            block = m.group(1)
            continue
        m = re.match(r"^\* `([a-z0-9_]+)` - (.*)$", line)
        if m and section is not None:
            section.setdefault(block, {}).setdefault(m.group(1), m.group(2).strip())
    docs[t] = {"arguments": args, "attributes": attrs}
json.dump({"source": "website/docs/r/<type>.html.markdown", "resources": docs},
          open(out, "w"), indent=2, sort_keys=True, ensure_ascii=False)
open(out, "a").write("\n")
PY

echo "azurerm $version: $(jq '.provider_schemas[].resource_schemas | length' "$here/schema.json") resource types" \
     "($(jq -r '.provider_schemas[].resource_schemas | keys | join(", ")' "$here/schema.json"))"
echo "terraform: $(jq -r .terraform_version "$work/version.json"); backend arguments: $(jq '.block.attributes | length' "$here/backend.json")"
echo "mirror: $dest"
