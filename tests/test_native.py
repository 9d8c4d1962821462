"""Native code: LipSwish loops against their PyTorch formulas, the large-block allocator, the build."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from iresnet.lipschitz import activations
from iresnet.native import lipswish as native

_NO_NATIVE = os.environ.get("IRESNET_NATIVE") == "0" or not any(
    shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++")
)
needs_native = pytest.mark.skipif(_NO_NATIVE, reason="no C++ compiler, or IRESNET_NATIVE=0")

# (name, x shape, beta shape, memory format): channels-last and contiguous maps, a (B, C)
# matrix, one shared beta, and sizes that leave partial vectors and take the parallel path.
LAYOUTS = [
    ("channels_last", (3, 19, 29, 31), (19, 1, 1), torch.channels_last),
    ("contiguous", (3, 19, 29, 31), (19, 1, 1), torch.contiguous_format),
    ("beta_1c11", (2, 5, 3, 7), (1, 5, 1, 1), torch.channels_last),
    ("matrix", (37, 13), (13,), torch.contiguous_format),
    ("shared_beta", (2, 4, 9, 9), (1, 1, 1), torch.channels_last),
    ("small", (1, 3, 1, 1), (3, 1, 1), torch.contiguous_format),
]


def _inputs(shape, beta_shape, memory_format, dtype, n_maps):
    torch.manual_seed(0)
    maps = [(3 * torch.randn(shape, dtype=dtype)).contiguous(memory_format=memory_format) for _ in range(n_maps)]
    return maps, torch.rand(beta_shape, dtype=dtype) + 0.3


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS, ids=[layout[0] for layout in LAYOUTS])
def test_native_lipswish_matches_its_formulas(layout, dtype):
    _, shape, beta_shape, memory_format = layout
    (gg, grad, x), beta = _inputs(shape, beta_shape, memory_format, dtype, 3)
    cases = [
        (native.lipswish_and_slope, activations._lipswish_and_slope.eager, (x, beta)),
        (native.lipswish_beta_grad, activations._lipswish_beta_grad.eager, (grad, x, beta)),
        (native.lipswish_slope_grads, activations._lipswish_slope_grads.eager, (gg, grad, x, beta)),
    ]
    for twin, formula, args in cases:
        got, expected = twin(*args), formula(*args)
        assert got is not None, twin.__name__
        for a, b in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(expected)):
            assert a.shape == b.shape and a.dtype == b.dtype
            if a.shape == x.shape:
                assert a.stride() == x.stride()  # laid out as x
            # absolute error relative to the map's scale: the curvature 2 + z (1 - 2s) cancels
            scale = b.abs().max().item()
            eps = 1e-6 if dtype == torch.float32 else 1e-14
            torch.testing.assert_close(a, b, rtol=10 * eps, atol=eps * scale)


@needs_native
def test_native_lipswish_declines_what_it_does_not_take():
    (grad, x), beta = _inputs((2, 4, 6, 6), (4, 1, 1), torch.channels_last, torch.float32, 2)
    declined = [
        (x.half(), beta.half()),  # dtype
        (x, beta.double()),  # mixed dtypes
        (x[:, :, ::2], beta),  # not dense
        (x.permute(0, 2, 1, 3), beta),  # another layout
        (x, torch.rand(4, 1)),  # beta along another dim
        (x, torch.rand(3, 1, 1)),  # beta of another size
        (x.flatten()[:4], torch.rand(4)),  # no channel dim
    ]
    for args in declined:
        assert native.lipswish_and_slope(*args) is None
    assert native.lipswish_beta_grad(grad.contiguous(), x, beta) is None  # strides differ from x's
    torch.testing.assert_close(  # ... and the formula runs instead
        activations._lipswish_beta_grad(grad.contiguous(), x, beta), activations._lipswish_beta_grad.eager(grad, x, beta)
    )


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env={**os.environ, **env}
    )


@needs_native
def test_large_block_cache_reuses_blocks_without_page_faults_and_keeps_results():
    done = _run("""
        import json, resource, torch
        from iresnet.native import install_large_block_cache, large_block_cache_stats
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(64, 3, 3))
        x = torch.randn(16, 3, 32, 32)
        def grads():
            net.zero_grad()
            net(x).square().sum().backward()
            return [p.grad.clone() for p in net.parameters()]
        before = grads()
        assert large_block_cache_stats() is None
        assert install_large_block_cache()
        assert install_large_block_cache()  # a second call changes nothing
        same = all(torch.equal(a, b) for a, b in zip(before, grads()))
        def step():
            a = torch.empty(32, 64, 28, 28).fill_(1.0)  # 6.4 MB
            b = torch.empty(64, 64, 14, 14).fill_(2.0)  # 3.2 MB
            del a, b
            c = torch.empty(64, 64, 14, 14).fill_(3.0)  # a freed 6.4 MB block serves it
            torch.empty(100).fill_(0.0)  # small: the default allocator's
            del c
        for _ in range(3):
            step()
        start = large_block_cache_stats()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            step()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        end = large_block_cache_stats()
        for _ in range(4):  # larger blocks than any cached one: idle blocks are unmapped first
            blocks = [torch.empty(4 << 20) for _ in range(3)]
            del blocks
        print(json.dumps({"same": same, "faults": faults, "start": start, "end": end, "last": large_block_cache_stats()}))
    """)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    start, end, last = result["start"], result["end"], result["last"]
    assert result["same"]  # the allocator does not change what is computed
    assert end["misses"] == start["misses"] and end["hits"] - start["hits"] == 60
    assert result["faults"] < 200  # 20 steps of 16 MB in fresh pages would fault ~80,000 times
    assert end["in_use"] == 0 and end["mapped"] <= 1.25 * end["peak_in_use"]
    assert last["unmapped"] > 0 and last["mapped"] <= 1.25 * last["peak_in_use"]


@needs_native
def test_large_block_cache_reaches_a_steady_state_on_protocol_training_steps():
    """After the first steps every block comes from the cache: no block is mapped or unmapped
    again (each would be faulted in afresh), while the mapped total stays near the peak in use."""
    done = _run("""
        import json, torch
        from hydra import compose, initialize_config_dir
        from hydra.utils import instantiate
        from iresnet.cli.common import config_dir
        from iresnet.metrics import bits_per_dim
        from iresnet.native import install_large_block_cache, large_block_cache_stats
        install_large_block_cache()
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose("train", overrides=["experiment=mnist5k_bench"])
        torch.manual_seed(0)
        model = instantiate(cfg.model, input_shape=[1, 28, 28]).train()
        optimizer = torch.optim.Adam(model.parameters())
        x = torch.rand(32, 1, 28, 28) * 0.9 + 0.05
        stats = []
        for _ in range(6):
            optimizer.zero_grad()
            bits_per_dim(model.log_prob(x), 784).mean().backward()
            optimizer.step()
            stats.append(large_block_cache_stats())
        print(json.dumps(stats))
    """)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout.splitlines()[-1])
    settled, last = stats[2], stats[-1]
    assert last["hits"] > settled["hits"]
    assert (last["misses"], last["unmapped"]) == (settled["misses"], settled["unmapped"])
    assert last["mapped"] <= 1.25 * last["peak_in_use"]


@needs_native
def test_large_block_cache_gives_back_idle_blocks_when_the_system_is_out_of_memory():
    done = _run("""
        import resource, torch
        from iresnet.native import install_large_block_cache, large_block_cache_stats
        install_large_block_cache()
        blocks = [torch.empty(5 << 20) for _ in range(10)]  # 10 x 20 MiB, cached when freed
        del blocks
        vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) << 10
        # 50 MiB below the current size: a 100 MiB block fits only once every idle block is gone
        # (the cache by itself keeps 100 MiB of them: its peak in use was 200 MiB)
        resource.setrlimit(resource.RLIMIT_AS, (vm - (50 << 20), resource.RLIM_INFINITY))
        big = torch.empty(25 << 20).fill_(1.0)
        print(large_block_cache_stats()["unmapped"])
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "10"


def test_native_code_can_be_turned_off_and_a_failed_build_falls_back(tmp_path):
    code = """
        import warnings, torch
        from iresnet.lipschitz import LipSwish
        from iresnet.native import install_large_block_cache
        from iresnet.native.build import failures
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            installed = install_large_block_cache()
            act = LipSwish(3).double().train()
            x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
            ok = torch.autograd.gradgradcheck(act, (x,))
        print(installed, ok, sorted(failures), [str(w.message) for w in caught])
    """
    off = _run(code, IRESNET_NATIVE="0")
    assert off.returncode == 0, off.stderr
    assert off.stdout.startswith("False True ['large_block_cache', 'lipswish'] []")  # silent
    broken = _run(code, CXX=str(tmp_path / "no-such-compiler"), IRESNET_CACHE_DIR=str(tmp_path / "cache"))
    assert broken.returncode == 0, broken.stderr
    assert broken.stdout.startswith("False True ['large_block_cache', 'lipswish']")
    assert broken.stdout.count("building its native code") == 2  # once per library
    assert "Set IRESNET_NATIVE=0" in broken.stdout


@needs_native
def test_command_line_tools_install_the_large_block_cache():
    done = _run("""
        import iresnet.cli.common
        from iresnet.native import large_block_cache_stats
        print(large_block_cache_stats() is not None)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "True"
