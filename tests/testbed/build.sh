#!/usr/bin/env bash
# Builds the programs of the Kubernetes test bed (tests/support/testbed.rs) from the Go module
# proxy, at the versions in tests/testbed/versions, each into
# ~/.cache/raydeploy/testbed/<tool>-<version>/, then links them all into
# ~/.cache/raydeploy/testbed/bin/. A tool whose binaries are already there is not rebuilt.
#
# Each tool is built from a scratch module that requires it (and takes over the module
# replacements of its own go.mod, since Go ignores those of a dependency); for k8s.io/kubernetes
# every k8s.io/<staging> module is replaced by its v0.<minor>.<patch> release.
#
#   bash tests/testbed/build.sh            # everything (terraform only if the machine has none)
#   bash tests/testbed/build.sh etcd kwok  # just these
#
# Environment: RAYDEPLOY_CACHE (default ~/.cache/raydeploy), GO (default: go on PATH, else
# /usr/local/go/bin/go), RAYDEPLOY_TESTBED_TERRAFORM=1 builds terraform even when one is installed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions
. "$here/versions"

cache=${RAYDEPLOY_CACHE:-$HOME/.cache/raydeploy}
tb=$cache/testbed
go=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
[ -x "$go" ] || { echo "build.sh: Go $GO_MIN or newer is needed (no go on PATH, nor $go)" >&2; exit 1; }

export GOCACHE=$cache/go-build
export GOMODCACHE=$cache/gomod
export GOFLAGS="-trimpath -buildvcs=false -mod=mod"
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOWORK=off
mkdir -p "$tb/bin" "$GOCACHE" "$GOMODCACHE"

scratch_root=$(mktemp -d)
trap 'rm -rf "$scratch_root"' EXIT

# The replacements a module's own go.mod makes: "old=new@version" for module replacements, and,
# for k8s.io/kubernetes, each ./staging/src/k8s.io/X as k8s.io/X@v0.<minor>.<patch>.
replacements() { # module version
  local gomod
  gomod=$("$go" mod download -json "$1@$2" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [ -n "$gomod" ] || { echo "build.sh: no go.mod for $1@$2" >&2; return 1; }
  local staging_version="v0.${2#v1.}"
  "$go" mod edit -json "$gomod" | python3 -c '
import json, sys
staging = sys.argv[1]
for r in json.load(sys.stdin).get("Replace") or []:
    old, new = r["Old"], r["New"]
    lhs = old["Path"] + ("@" + old["Version"] if old.get("Version") else "")
    if new.get("Version"):
        print(lhs + "=" + new["Path"] + "@" + new["Version"])
    elif new["Path"].startswith("./staging/src/"):
        print(old["Path"] + "=" + new["Path"][len("./staging/src/"):] + "@" + staging)
' "$staging_version"
}

# build NAME VERSION MODULE LDFLAGS PACKAGE... — each PACKAGE's binary is named after its last
# path element (a module root's after the module's last element that is not a major version).
build() {
  local name=$1 version=$2 module=$3 ldflags=$4
  shift 4
  local dest=$tb/$name-$version missing=0 pkg bin
  for pkg in "$@"; do
    bin=$(binname "$pkg")
    [ -x "$dest/$bin" ] || missing=1
  done
  if [ $missing = 0 ]; then
    echo "$name $version: cached ($dest)"
    return 0
  fi
  echo "$name $version: building $* ..."
  local t0=$SECONDS dir=$scratch_root/$name
  rm -rf "$dir" "$dest.partial"
  mkdir -p "$dir" "$dest.partial"
  (
    cd "$dir"
    "$go" mod init "raydeploy.testbed/$name" >/dev/null 2>&1
    local r
    for r in $(replacements "$module" "$version"); do
      "$go" mod edit -replace="$r"
    done
    "$go" mod edit -require="$module@$version"
    "$go" get "${@/%/@$version}" >/dev/null 2>&1 || "$go" get "${@/%/@$version}"
    for pkg in "$@"; do
      "$go" build -ldflags="-s -w $ldflags" -o "$dest.partial/$(binname "$pkg")" "$pkg"
    done
  )
  rm -rf "$dest"
  mv "$dest.partial" "$dest"
  echo "$name $version: built in $((SECONDS - t0)) s ($(du -sh "$dest" | cut -f1))"
}

binname() {
  local b=${1##*/}
  case $b in v[0-9]*) b=${1%/*}; b=${b##*/} ;; esac
  case $1 in
    github.com/ray-project/kuberay/ray-operator) b=kuberay-operator ;;
    go.etcd.io/etcd/server/v3) b=etcd ;;
  esac
  echo "$b"
}

link() { # NAME TARGET
  ln -sfn "$2" "$tb/bin/$1"
}

want() { # NAME: whether this run builds NAME
  [ ${#only[@]} = 0 ] && return 0
  local o
  for o in "${only[@]}"; do [ "$o" = "$1" ] && return 0; done
  return 1
}

only=("$@")
t_all=$SECONDS

if want etcd; then
  build etcd "$ETCD" go.etcd.io/etcd/server/v3 "" go.etcd.io/etcd/server/v3
  link etcd "$tb/etcd-$ETCD/etcd"
fi

if want kubernetes; then
  kv=$KUBERNETES minor=${KUBERNETES#v1.}
  minor=${minor%%.*}
  kx=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    kx="$kx -X $p.gitVersion=$kv -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  build kubernetes "$kv" k8s.io/kubernetes "$kx" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    link "$b" "$tb/kubernetes-$kv/$b"
  done
fi

if want kwok; then
  build kwok "$KWOK" sigs.k8s.io/kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK" sigs.k8s.io/kwok/cmd/kwok
  link kwok "$tb/kwok-$KWOK/kwok"
  # kwok's own default stages (those kwokctl gives it: kustomize/stage/fast), as one file.
  stages=$tb/kwok-$KWOK/stages.yaml
  if [ ! -s "$stages" ]; then
    src=$("$go" mod download -json "sigs.k8s.io/kwok@$KWOK" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
    for d in $(sed -n 's/^- \.\.\/\(.*\)/\1/p' "$src/kustomize/stage/fast/kustomization.yaml"); do
      for f in $(sed -n 's/^- \(.*\.yaml\)$/\1/p' "$src/kustomize/stage/$d/kustomization.yaml"); do
        echo "---"
        cat "$src/kustomize/stage/$d/$f"
      done
    done >"$stages.partial"
    mv "$stages.partial" "$stages"
  fi
  link kwok-stages.yaml "$stages"
fi

if want kuberay; then
  build kuberay "$KUBERAY" github.com/ray-project/kuberay/ray-operator "" github.com/ray-project/kuberay/ray-operator
  link kuberay-operator "$tb/kuberay-$KUBERAY/kuberay-operator"
fi

if want helm3; then
  build helm3 "$HELM3" helm.sh/helm/v3 "-X helm.sh/helm/v3/internal/version.version=$HELM3" helm.sh/helm/v3/cmd/helm
  link helm3 "$tb/helm3-$HELM3/helm"
fi

if want helm4; then
  build helm4 "$HELM4" helm.sh/helm/v4 "-X helm.sh/helm/v4/internal/version.version=$HELM4" helm.sh/helm/v4/cmd/helm
  link helm4 "$tb/helm4-$HELM4/helm"
fi

if want buildkit; then
  build buildkit "$BUILDKIT" github.com/moby/buildkit "-X github.com/moby/buildkit/version.Version=$BUILDKIT" \
    github.com/moby/buildkit/cmd/buildkitd github.com/moby/buildkit/cmd/buildctl
  link buildkitd "$tb/buildkit-$BUILDKIT/buildkitd"
  link buildctl "$tb/buildkit-$BUILDKIT/buildctl"
fi

if want buildx; then
  build buildx "$BUILDX" github.com/docker/buildx "-X github.com/docker/buildx/version.Version=$BUILDX" \
    github.com/docker/buildx/cmd/buildx
  # The name the docker CLI looks for in a cli-plugins folder.
  link docker-buildx "$tb/buildx-$BUILDX/buildx"
fi

# Terraform only where the machine has none (or when asked for).
if { [ ${#only[@]} = 0 ] && ! command -v terraform >/dev/null 2>&1; } \
  || [ "${RAYDEPLOY_TESTBED_TERRAFORM:-}" = 1 ] || { [ ${#only[@]} -gt 0 ] && want terraform; }; then
  build terraform "$TERRAFORM" github.com/hashicorp/terraform \
    "-X github.com/hashicorp/terraform/version.dev=no" github.com/hashicorp/terraform
  link terraform "$tb/terraform-$TERRAFORM/terraform"
fi

echo "test bed programs in $tb/bin ($((SECONDS - t_all)) s in all)"
