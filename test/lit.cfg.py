# -*- Python -*-
# The lit suite of moec: moe-opt / moec runs checked with FileCheck.

import json
import os
import platform
import subprocess

import lit.formats
from lit.llvm import llvm_config

config.name = "MOE"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.moe_obj_root, "test")
config.excludes = ["reference", "e2e", "unit", "packaging", "CMakeLists.txt", "lit.cfg.py"]
config.substitutions.append(("%PATH%", config.environment["PATH"]))
config.substitutions.append(("%reference_python", config.moe_reference_python))
config.substitutions.append(("%moe_obj_root", config.moe_obj_root))
config.substitutions.append(("%moe_src_root", config.moe_src_root))
config.substitutions.append(("%fixture_dir", os.path.join(config.moe_src_root, "test", "reference")))

# Tests that run x86 executables under qemu-x86_64 with an older CPU model.
if platform.machine() == "x86_64":
    config.available_features.add("host-x86_64")

# The CUDA target's checks: ptxas assembles its device code (CUDA comes with
# the machine image, not from apt: a test that needs it says so); a machine
# with an NVIDIA driver runs its executables instead of refusing them. Where
# ptxas is comes from moec itself (`moec targets --json`), so the tests look
# where the compiler looks.
def find_ptxas():
    moec = os.path.join(config.moe_tools_dir, "moec")
    run = subprocess.run([moec, "targets", "--json"], capture_output=True, text=True)
    if run.returncode != 0:
        lit_config.fatal("%s targets --json failed: %s" % (moec, run.stderr.strip()))
    return next((t["ptxas"] for t in json.loads(run.stdout) if t.get("ptxas")), None)


ptxas = find_ptxas()
if ptxas:
    config.available_features.add("ptxas")
    config.substitutions.append(("%ptxas", ptxas))
if os.path.exists("/dev/nvidiactl"):
    config.available_features.add("cuda-device")

llvm_config.use_default_substitutions()
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)
llvm_config.with_environment("PATH", config.moe_tools_dir, append_path=True)
# Compiled kernels are cached per test run, never in the user's cache.
llvm_config.with_environment("MOEC_CACHE_DIR", config.moe_kernel_cache)

tools = ["moe-opt", "moec", "FileCheck", "not", "count"]
llvm_config.add_tool_substitutions(tools, [config.moe_tools_dir, config.llvm_tools_dir])
