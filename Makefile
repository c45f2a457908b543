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
	@echo "Demo: annotations and decoded videos are in results/demo/ (videos.json lists them)."
	@echo "The cache, train, infer and evaluate stages are not built yet: the run stops after decode."

test: $(STAMP)
	pytest

lint: $(STAMP)
	snakemake --lint
	snakefmt --check .

clean:
	rm -rf results .snakemake
