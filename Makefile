# Shortcuts for the scripts; the scripts are the source of truth.
.PHONY: demo test setup
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
setup:
	bash scripts/setup.sh
