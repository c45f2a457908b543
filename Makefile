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
	@echo "Demo: annotations, decoded videos and the backbone cache are in results/demo/"
	@echo "(cache/tiny-random.json lists the Zarr stores)."
	@echo "The train, infer and evaluate stages are not built yet: the run stops after the cache."

test: $(STAMP)
	pytest

lint: $(STAMP)
	snakemake --lint
	snakefmt --check .

clean:
	rm -rf results .snakemake
