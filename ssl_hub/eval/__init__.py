"""Evaluation of frozen backbones: kNN (and, as they land, linear probe and fine-tuning)."""

from ssl_hub.eval.knn import eval_transform, evaluate_knn, extract_features, knn_accuracy, knn_predict

__all__ = ["eval_transform", "evaluate_knn", "extract_features", "knn_accuracy", "knn_predict"]
