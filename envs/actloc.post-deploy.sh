#!/usr/bin/env bash
# Snakemake runs this once, inside the new environment, from the folder Snakemake runs in:
# installs the checkout's actloc into it, editable (see actloc.yaml for why), and nothing else.
set -euo pipefail
if ! grep -qs '^name = "actloc"$' pyproject.toml; then
    echo "actloc.post-deploy.sh: $(pwd) is not the actloc checkout; run Snakemake from it" >&2
    exit 1
fi
pip install --no-deps --editable "$(pwd)"
