import numpy as np
import pytest

from codesign import kernels


def test_cpp_extension_is_built():
    assert kernels.have_cpp_kernels(), "codesign._kernels was not compiled: pip install . builds it"


@pytest.mark.parametrize("threads", [1, 2])
def test_group_l1_importance_matches_reference(threads):
    rng = np.random.default_rng(0)
    tensors = [
        rng.standard_normal((96, 40)).astype(np.float32),
        rng.standard_normal((96, 1, 7, 7)).astype(np.float32),
        rng.standard_normal((96, 2000)).astype(np.float32) * 3,
    ]
    got = kernels.group_l1_importance(tensors, num_threads=threads)
    want = kernels.group_l1_importance_reference(tensors)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got.shape == (96,)


def test_importance_prefers_heavy_channels():
    w = np.ones((4, 8), dtype=np.float32)
    w[2] *= 10
    w[0] *= 0.1
    order = kernels.rank_channels(kernels.group_l1_importance([w]))
    assert order[0] == 2 and order[-1] == 0


def test_rank_is_stable_on_ties_and_matches_numpy():
    scores = np.array([1.0, 3.0, 3.0, 0.5, 3.0], dtype=np.float32)
    assert kernels.rank_channels(scores).tolist() == [1, 2, 4, 0, 3]
    rng = np.random.default_rng(1)
    s = rng.integers(0, 5, 1000).astype(np.float32)
    assert kernels.rank_channels(s).tolist() == kernels.rank_channels(s, use_cpp=False).tolist()


def test_bad_input_raises_python_errors():
    with pytest.raises(ValueError, match="channels"):
        kernels.group_l1_importance([np.ones((4, 2), np.float32), np.ones((5, 2), np.float32)])
    with pytest.raises(ValueError):
        kernels.group_l1_importance([])
    with pytest.raises(ValueError):
        kernels.rank_channels(np.ones((2, 2), np.float32))
