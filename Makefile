# make setup | make test | make run | make bench | make bench-numerics | make report
# Variables: DATA_DIR (folder containing cifar-10-batches-py/, or an image folder with train/ and test/),
# EPOCHS, SMOKE=1, DEVICE, RESUME=1.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup test run bench bench-numerics report clean

setup: $(VENV)/.installed

# The pinned packages, then the project itself (pyproject.toml), editable: resnet_lib and resnet_tools
# import from any folder, as the notebooks' first cell expects.
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

test: setup
	$(PY) -m pytest -q

# The main job: every notebook in order with papermill (scripts/run_notebooks.py); executed
# copies in runs/. Unset variables keep the notebooks' defaults (full CIFAR-10, 40 epochs):
# that run writes the record, results/ and figures/ (committed). Any other run writes under
# runs/ (git-ignored): SMOKE=1 in runs/smoke/, EPOCHS=2 in runs/epochs2/, other data such as
# DATA_DIR=../shared/data/cifar10-mini in runs/cifar10-mini/.
# RESUME=1 continues runs killed before their last epoch from their checkpoints.
run: setup
	$(PY) scripts/run_notebooks.py --make $(if $(DATA_DIR),--data-dir "$(DATA_DIR)") $(if $(EPOCHS),--epochs $(EPOCHS)) \
		$(if $(filter 1 true yes,$(SMOKE)),--smoke) $(if $(DEVICE),--device $(DEVICE)) \
		$(if $(filter 1 true yes,$(RESUME)),--resume) \
		$(if $(RESULTS_DIR),--results-dir "$(RESULTS_DIR)") $(if $(FIGURES_DIR),--figures-dir "$(FIGURES_DIR)")

# Speed benchmark (bench/README.md): this machine's CPU by default; DEVICE=cuda runs the
# GPU part with the system python3 (GPU machines have torch but no package registry, so
# no venv there); BENCH_ARGS passes more options, e.g. BENCH_ARGS=--quick.
BENCH_DEPS := $(if $(filter cuda%,$(DEVICE)),,setup)
bench: $(BENCH_DEPS)
	$(if $(BENCH_DEPS),$(PY),$(PYTHON)) bench/bench.py $(if $(DEVICE),--device $(DEVICE)) $(BENCH_ARGS)

# fp32/bf16 x eager/compile side by side (bench/numerics.py): what fit's CPU default follows.
bench-numerics: $(BENCH_DEPS)
	$(if $(BENCH_DEPS),$(PY),$(PYTHON)) bench/numerics.py $(if $(DEVICE),--device $(DEVICE)) $(BENCH_ARGS)

# The paper: LaTeX fragments generated from RESULTS_DIR and FIGURES_DIR (default: the record,
# results/ and figures/) into report/generated/, then report/report.pdf with pdflatex (twice, for the
# references). Without pdflatex, installs Debian's LaTeX (about 53 MB to download, 160 MB
# installed; needs root or sudo): apt-get install --no-install-recommends $(TEX_PACKAGES)
TEX_PACKAGES := texlive-latex-base texlive-latex-recommended texlive-fonts-recommended
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# REPORT_PDF: where the PDF goes (default the committed report/report.pdf; smoke and CI builds
# write elsewhere, so only a full run changes the record). LaTeX builds in report/build/ (git-ignored).
REPORT_PDF ?= report/report.pdf
# The record's fragments are committed (report/generated/); a build from other results writes its
# fragments under report/build/ (git-ignored), and LaTeX reads them from there first (TEXINPUTS).
OTHER_INPUTS := $(if $(RESULTS_DIR)$(FIGURES_DIR),build/inputs)
report: setup
	$(PY) scripts/make_report_inputs.py --results "$(or $(RESULTS_DIR),results)" \
		--figures "$(or $(FIGURES_DIR),figures)" --out report/$(or $(OTHER_INPUTS),.)/generated --tex-dir report
	@command -v pdflatex >/dev/null || { echo "pdflatex not found: installing $(TEX_PACKAGES)"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends $(TEX_PACKAGES) >/dev/null; } && command -v pdflatex >/dev/null \
		|| { echo "error: no pdflatex; install: apt-get install --no-install-recommends $(TEX_PACKAGES)"; exit 1; }
	mkdir -p report/build && cd report && for pass in 1 2; do \
		$(if $(OTHER_INPUTS),TEXINPUTS=$(OTHER_INPUTS):) pdflatex -interaction=nonstopmode -halt-on-error \
		-output-directory=build report.tex >/dev/null || { tail -n 40 build/report.log; \
		echo "error: LaTeX failed; full log in report/build/report.log"; exit 1; }; done
	mkdir -p "$(dir $(REPORT_PDF))" && cp report/build/report.pdf "$(REPORT_PDF)"
	@echo "built $(REPORT_PDF)"

clean:
	rm -rf results runs .pytest_cache
