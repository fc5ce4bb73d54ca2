"""pytest set-up: hypothesis profiles, the gpu marker, the interpreter switch."""

import os

import pytest
from hypothesis import HealthCheck, settings

from intfa.runtime import cuda_available

# Without a GPU the Triton kernels run in Triton's interpreter (NumPy on CPU tensors). The switch is
# read when a kernel is decorated, so it must be set before intfa.kernels (or triton) is first imported:
# here, before any test module is collected. intfa.runtime imports neither, and `import torch` does not
# import triton.
if not cuda_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Profiles: "ci" (fast, CI's default: 15 derandomized examples, the same ones every run, so that the suite stays
# under ~8 minutes on CI's 2 cores), "dev" (a quick local loop), "thorough" (long fuzzing runs), "gpu-thorough"
# (the compiled kernels' fuzz, tests/test_kernel_gpu_fuzz.py, a few thousand cases: run it on the device with
# HYPOTHESIS_PROFILE=gpu-thorough pytest -m gpu tests/test_kernel_gpu_fuzz.py).
# Choose with HYPOTHESIS_PROFILE=thorough pytest ...
_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=15, derandomize=True, print_blob=True, **_common)
settings.register_profile("dev", max_examples=10, **_common)
settings.register_profile("thorough", max_examples=1000, **_common)
settings.register_profile("gpu-thorough", max_examples=3000, print_blob=True, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(config, items):
    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run `pytest -m gpu` on the device)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
