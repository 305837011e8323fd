import onnx
import pytest
import torch

from codesign.evaluation import prepare_images
from codesign.export import check_onnx_parity, export_onnx, onnxruntime_logits
from codesign.supernet import ElasticSupernet
from codesign.testing import random_genomes, randomize_batchnorm


@pytest.fixture(scope="module")
def supernet(default_space):
    torch.manual_seed(0)
    net = ElasticSupernet(default_space)
    randomize_batchnorm(net)
    return net.eval()


def test_onnx_matches_torch_on_real_images(supernet, default_space, fmnist_splits, tmp_path):
    """20 random subnets + smallest + largest: onnx.checker passes and onnxruntime == torch within 1e-4."""
    test = fmnist_splits.test.head(64)
    worst = 0.0
    for i, genome in enumerate(random_genomes(default_space, 20, seed=11)):
        sub = supernet.extract(genome).eval()
        path = export_onnx(sub, tmp_path / f"m{i}.onnx")
        model = onnx.load(str(path))
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        assert dims == [1, 1, genome.resolution, genome.resolution]  # static shapes
        images, _ = prepare_images(test, fmnist_splits.mean, fmnist_splits.std, genome.resolution)
        worst = max(worst, check_onnx_parity(sub, path, images, tolerance=1e-4))
    assert worst <= 1e-4


def test_parity_check_fails_on_a_wrong_model(supernet, default_space, fmnist_splits, tmp_path):
    from codesign.errors import ExportError
    from codesign.space import Genome

    genome = Genome.smallest(default_space)
    sub = supernet.extract(genome).eval()
    path = export_onnx(sub, tmp_path / "m.onnx")
    with torch.no_grad():
        sub.classifier.bias.add_(1.0)  # torch side now differs from the exported file
    images, _ = prepare_images(fmnist_splits.test.head(8), fmnist_splits.mean, fmnist_splits.std, genome.resolution)
    with pytest.raises(ExportError, match="differs"):
        check_onnx_parity(sub, path, images)
    assert onnxruntime_logits(path, images.numpy()).shape == (8, 10)
