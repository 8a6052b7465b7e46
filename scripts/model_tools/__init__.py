"""clinembed's Python tools, importable as a package from the
project's environments (scripts/python-env.sh puts scripts/ on their path):
the one reference implementation (`model_tools.reference`), file helpers,
the export's last step, the default model's graph skeleton, quantization and
its agreement report."""
