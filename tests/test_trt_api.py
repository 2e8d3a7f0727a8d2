"""The TensorRT module against the real TensorRT Python API (release 11.4), without TensorRT's libraries or a GPU.

`.trt-api` is `../shared/tools/trt-api/make.sh .trt-api`'s output (CI builds it before the tests): PyPI's real
TensorRT bindings wheel, stand-ins for the native entry points (so `import tensorrt` works, nothing can run), and
type stubs generated from the bindings. These tests type-check our TensorRT code against those stubs and check, in
a process that imports the real bindings, that every TensorRT name it uses exists in that release. Neither builds
or runs an engine: that needs TensorRT's libraries and a GPU (docs/GPU.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tool_modules import load_tool

ROOT = Path(__file__).resolve().parent.parent
TRT_API = ROOT / ".trt-api"
TRT_MODULES = ["engines/runners/trt.py", "tools/build_engine.py"]
RECEIVERS = {"builder": "Builder", "network": "INetworkDefinition", "parser": "OnnxParser",
             "config": "IBuilderConfig", "optimisation": "IOptimizationProfile", "runtime": "Runtime",
             "engine": "ICudaEngine", "context": "IExecutionContext"}
"""How our TensorRT module names the TensorRT objects it calls methods on (variable or attribute → class)."""
REMOVED = ["execute_async_v2", "execute_async(", "get_binding_index", "get_binding_shape", "binding_is_input",
           "num_bindings", "max_workspace_size", "build_engine(", "EXPLICIT_BATCH", "platform_has_fast_fp16",
           "BuilderFlag.FP16", "pycuda.autoinit"]
"""Pre-TensorRT-10 API (and FP16 flag removed in 11) that must not come back."""

CHECK_NAMES = """
import ast, json, sys
import tensorrt
import seg_video.engines.runners.trt as module

receivers = json.loads(sys.argv[1])
tree = ast.parse(open(module.__file__).read())
used, missing = set(), []
for node in ast.walk(tree):
    if not isinstance(node, ast.Attribute):
        continue
    chain, base = [node.attr], node.value
    while isinstance(base, ast.Attribute):
        chain.append(base.attr)
        base = base.value
    name = base.id if isinstance(base, ast.Name) else None
    if name == "trt":
        owner, path = tensorrt, list(reversed(chain))
    elif name == "self" and len(chain) == 2 and chain[1] in receivers:
        owner, path = getattr(tensorrt, receivers[chain[1]]), [chain[0]]
    elif name in receivers and len(chain) == 1:
        owner, path = getattr(tensorrt, receivers[name]), chain
    else:
        continue
    label = f"{owner.__name__}.{'.'.join(path)}"
    used.add(label)
    for attribute in path:
        if not hasattr(owner, attribute):
            missing.append(label)
            break
        owner = getattr(owner, attribute)
print(json.dumps({"version": tensorrt.__version__, "used": sorted(used), "missing": sorted(set(missing))}))
"""


def need_trt_api() -> None:
    """Skip unless the trt-api stand-in was built in this checkout."""
    if not (TRT_API / "stubs" / "tensorrt.pyi").is_file() or not (TRT_API / "site" / "tensorrt.py").is_file():
        pytest.skip(".trt-api is not built here (bash ../shared/tools/trt-api/make.sh .trt-api)")


def test_trt_module_type_checks_against_the_real_bindings(tmp_path: Path) -> None:
    need_trt_api()
    pytest.importorskip("mypy")
    config = tmp_path / "mypy.ini"  # torch & co. skipped: this check is about TensorRT's API, and takes seconds
    config.write_text(textwrap.dedent("""\
        [mypy]
        python_version = 3.11
        ignore_missing_imports = True
        follow_imports = silent
        [mypy-torch.*,torchvision.*,numpy.*,onnx.*,onnxruntime.*,cv2.*,av.*]
        follow_imports = skip
        [mypy-tensorrt_bindings.*]
        ignore_errors = True
        """))
    typecheck = load_tool("typecheck")  # the package laid out as installed, so its own imports resolve
    tree = tmp_path / "tree"
    typecheck.link_tree(tree)
    targets = [str(typecheck.installed_path(ROOT / module, tree)) for module in TRT_MODULES]
    result = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir",
                             str(tmp_path / "cache"), *targets], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "MYPYPATH": os.pathsep.join([str(TRT_API / "stubs"), str(tree)])},
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tensorrt" not in result.stdout  # found, not reported missing
    assert "Success: no issues found in 2 source files" in result.stdout


def test_trt_module_imports_with_the_real_bindings_and_uses_only_names_they_have() -> None:
    need_trt_api()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TRT_API / "site"), str(ROOT)]),
           "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(TRT_API / "lib"), os.environ.get("LD_LIBRARY_PATH")]))}
    result = subprocess.run([sys.executable, "-c", CHECK_NAMES, json.dumps(RECEIVERS)], cwd=ROOT,
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["version"].startswith("11.")
    assert report["missing"] == []
    assert {"IExecutionContext.execute_async_v3", "IExecutionContext.set_tensor_address",
            "IExecutionContext.set_input_shape", "Builder.build_serialized_network",
            "IBuilderConfig.set_timing_cache", "IOptimizationProfile.set_shape",
            "tensorrt.NetworkDefinitionCreationFlag.STRONGLY_TYPED"} <= set(report["used"])


def test_no_pre_tensorrt_10_api() -> None:
    for module in TRT_MODULES:
        source = (ROOT / module).read_text()
        assert not [name for name in REMOVED if name in source], module
