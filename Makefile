# `make demo` and `make test` set up .venv themselves on a fresh machine.
VENV := .venv
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: demo demo-full test lint clean

# The demo table of results/$(1); demo-full adds LoFi (its stage A and its tuned backbone's cache).
DEMO_TABLE = @echo; echo "Demo test split, mAP (%) at tIoU 0.3:0.1:0.7 (results/$(1)/map.csv):"; \
	cat results/$(1)/map.md; \
	echo "Plots: results/$(1)/plots/*.png; one HTML page of tables and plots: .venv/bin/snakemake --report report.html"

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

demo: $(STAMP)
	snakemake --cores all
	$(call DEMO_TABLE,demo)

demo-full: $(STAMP)
	snakemake --cores all results/demo-full/map.csv results/demo-full/plots/timelines.png
	$(call DEMO_TABLE,demo-full)

test: $(STAMP)
	pytest

lint: $(STAMP)
	snakemake --lint
	snakefmt --check .

clean:
	rm -rf results .snakemake
