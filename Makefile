# `make demo` and `make test` set up .venv themselves on a fresh machine.
VENV := .venv
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

demo: $(STAMP)
	snakemake --cores all
	@echo
	@echo "Demo test split, mAP (%) at tIoU 0.3:0.1:0.7 (results/demo/map.csv):"
	@cat results/demo/map.md
	@echo "Plots: results/demo/plots/*.png; one HTML page of tables and plots: .venv/bin/snakemake --report report.html"

test: $(STAMP)
	pytest

lint: $(STAMP)
	snakemake --lint
	snakefmt --check .

clean:
	rm -rf results .snakemake
