#!/usr/bin/env bash
# Checks the deployment files under deploy/ offline, with no cluster: the kustomization renders, the objects of
# Kubernetes' own kinds validate strictly against the API's schemas, the custom resources (Argo Rollouts,
# Flagger, Istio) carry what each tool needs and refer to each other correctly, and every Grafana panel has a
# query. One line per check; exits 1 when any fails. Installs what is missing (as root on Debian): kubectl, and
# kubernetes-validate in a virtualenv kept in the user's cache for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# The Kubernetes version whose schemas the core objects must satisfy, and the validator that carries them.
KUBERNETES_VERSION=${KUBERNETES_VERSION:-1.33.0}
KUBERNETES_VALIDATE=kubernetes-validate==1.37.0
VENV=${SHADOWDIFF_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/shadowdiff-venv}

ensure_commands kubectl:kubernetes-client python3:python3

# A virtualenv with kubernetes-validate (and PyYAML, which it brings), made once and reused.
ensure_venv() {
  if "$VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -qx "${KUBERNETES_VALIDATE#*==}"; then
    return 0
  fi
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    # Debian's python3 makes virtualenvs only with python3-venv.
    rm -rf "$VENV"
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
      echo "error: python3 cannot make a virtualenv (install python3-venv)" >&2
      exit 2
    fi
    echo "installing: python3-venv" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
  echo "installing: $KUBERNETES_VALIDATE into $VENV" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$KUBERNETES_VALIDATE"
}
ensure_venv
PYTHON=$VENV/bin/python

work=$(mktemp -d /tmp/shadowdiff-check-deploy.XXXXXX)
trap 'rm -rf "$work"' EXIT
status=0

# (a) The kustomization renders. kubectl kustomize reads only local files and needs no cluster.
if kubectl kustomize deploy/kubernetes >"$work/rendered.yaml" 2>"$work/kustomize.err"; then
  echo "ok   kustomize: deploy/kubernetes renders ($(grep -c '^kind:' "$work/rendered.yaml") objects)"
else
  echo "FAIL kustomize: deploy/kubernetes: $(grep -v '^# Warning' "$work/kustomize.err" | head -n 3 | tr '\n' ' ')"
  # Nothing below can be checked without the rendered objects.
  exit 1
fi

# (b) Kubernetes' own kinds, strictly (an unknown field fails), against the API's schemas.
"$PYTHON" scripts/check_deploy.py core "$work/rendered.yaml" "$work/core.yaml" || status=1
if out=$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" "$work/core.yaml" 2>&1); then
  echo "ok   core kinds: valid against Kubernetes $KUBERNETES_VERSION, strict"
else
  echo "FAIL core kinds: $(printf '%s\n' "$out" | sed "s|$work/core.yaml|rendered output|" | head -n 5 | tr '\n' ' ')"
  status=1
fi

# (c) The custom resources, the rendered ones and Flagger's (a separate choice, applied on its own), and
# what refers to what across them.
"$PYTHON" scripts/check_deploy.py resources --rendered="$work/rendered.yaml" deploy/flagger/canary.yaml \
  deploy/flagger/metric-template.yaml || status=1

# (d) The Grafana dashboard.
"$PYTHON" scripts/check_deploy.py grafana deploy/grafana/shadowdiff.json || status=1

if [ "$status" = 0 ]; then
  echo "deploy checks passed"
else
  echo "deploy checks FAILED"
fi
exit "$status"
