"""Accuracy of subnets with inherited weights: preprocessing, BN recalibration, the torch evaluator."""

from codesign.evaluation.accuracy import SubnetScore, TorchSubnetEvaluator, accuracy_of, predict_logits
from codesign.evaluation.batchnorm import recalibrate_bn
from codesign.evaluation.cpp_evaluator import CppSubnetEvaluator, InvalidGenomeError, have_cpp_evaluator
from codesign.evaluation.preprocess import prepare_images

__all__ = [
    "CppSubnetEvaluator",
    "InvalidGenomeError",
    "SubnetScore",
    "TorchSubnetEvaluator",
    "accuracy_of",
    "have_cpp_evaluator",
    "predict_logits",
    "prepare_images",
    "recalibrate_bn",
]
