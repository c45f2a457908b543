# `make demo` and `make test` set up .venv themselves on a fresh machine.
VENV := .venv
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: demo demo-full test lint clean

# The demo table's command; demo-full adds LoFi (its stage A and its tuned backbone's cache).
DEMO_TABLE = @echo; echo "Demo test split, mAP (%) at tIoU 0.3:0.1:0.7 (results/demo/map.csv):"; \
	cat results/demo/map.md; \
	echo "Plots: results/demo/plots/*.png; one HTML page of tables and plots: .venv/bin/snakemake --report report.html"

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

demo: $(STAMP)
	snakemake --cores all
	$(DEMO_TABLE)

demo-full: $(STAMP)
	snakemake --cores all --config 'datasets={demo: {methods: [head_only, losa, lofi]}}'
	$(DEMO_TABLE)

test: $(STAMP)
	pytest

lint: $(STAMP)
	snakemake --lint
	snakefmt --check .

clean:
	rm -rf results .snakemake
