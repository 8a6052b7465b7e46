"""optimum's ONNX exporter (python -m optimum.exporters.onnx, same
arguments) on PyTorch's TorchScript-based ONNX exporter.

optimum 1.23 calls torch.onnx.export without saying which exporter; PyTorch
2.9 and later default to the dynamo-based one, which needs onnxscript and
makes other graphs.  The exporter's environment runs on the project's
PyTorch (scripts/python-env.sh export), so this asks for the exporter
optimum was written for.
"""

import functools
import runpy
import sys

import torch.onnx

torch.onnx.export = functools.partial(torch.onnx.export, dynamo=False)
sys.argv[0] = "optimum.exporters.onnx"
runpy.run_module("optimum.exporters.onnx", run_name="__main__", alter_sys=True)
