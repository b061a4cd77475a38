# `make run` and `make test` create .venv when missing and install the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean notebook notebooks experiments

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,slurm,optuna]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/lossbench $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check lossbench hydra_plugins tests benchmarks experiments
	$(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check lossbench hydra_plugins tests benchmarks experiments
	$(BIN)/ruff format --check lossbench hydra_plugins tests benchmarks experiments

bench: $(STAMP)
	$(BIN)/python benchmarks/loop_overhead.py
	$(BIN)/python benchmarks/probe_cost.py
	$(BIN)/python benchmarks/sweep.py

# Jupyter on notebooks/ with the project's kernel (installs the `notebook` extra first);
# JUPYTER_ARGS="--port 8890 --no-browser" passes options to JupyterLab
notebook: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[notebook]"
	$(BIN)/jupyter lab notebooks/ $(JUPYTER_ARGS)

# Execute every notebook and re-save its .ipynb with outputs and figures
notebooks: $(STAMP)
	$(BIN)/python notebooks/execute.py

# The gallery (experiments/README.md): every experiment, updating its tracked figure on purpose
experiments: $(STAMP)
	$(BIN)/python experiments/catapult.py --figure experiments/catapult.png
	$(BIN)/python experiments/saddle_free_newton.py --figure experiments/saddle_free_newton.png
	$(BIN)/python experiments/pgd_escape_dimension.py --figure experiments/pgd_escape_dimension.png
	$(BIN)/python experiments/edge_of_stability.py --figure experiments/edge_of_stability.png
	$(BIN)/python experiments/deep_linear_stages.py --figure experiments/deep_linear_stages.png
	$(BIN)/python experiments/batch_size_sharpness.py --figure experiments/batch_size_sharpness.png
	$(BIN)/python experiments/init_scale_plateau.py --figure experiments/init_scale_plateau.png
	$(BIN)/python experiments/label_noise_losses.py --figure experiments/label_noise_losses.png
	$(BIN)/python experiments/hessian_outliers.py --figure experiments/hessian_outliers.png

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
