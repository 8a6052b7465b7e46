# Shortcuts for the scripts; the scripts are the source of truth.
.PHONY: demo test test-matrix setup
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
test-matrix:
	bash scripts/test-matrix.sh
setup:
	bash scripts/setup.sh
