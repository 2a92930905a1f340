"""Evaluation of frozen backbones: kNN, linear probe, fine-tuning, the kNN monitor for training runs, and the
collapse measures of :mod:`ssl_hub.modules.collapse`."""

from ssl_hub.eval.evaluate import evaluate_backbone as evaluate_backbone
from ssl_hub.eval.evaluate import evaluate_knn as evaluate_knn
from ssl_hub.eval.evaluate import evaluate_published as evaluate_published
from ssl_hub.eval.evaluate import record_results as record_results
from ssl_hub.eval.finetune import FinetuneResult as FinetuneResult
from ssl_hub.eval.finetune import finetune as finetune
from ssl_hub.eval.knn import eval_transform as eval_transform
from ssl_hub.eval.knn import extract_features as extract_features
from ssl_hub.eval.knn import knn_accuracy as knn_accuracy
from ssl_hub.eval.knn import knn_predict as knn_predict
from ssl_hub.eval.linear import linear_probe as linear_probe
from ssl_hub.eval.monitor import KNNMonitorCallback as KNNMonitorCallback
from ssl_hub.modules.collapse import effective_rank as effective_rank
from ssl_hub.modules.collapse import normalized_entropy as normalized_entropy
from ssl_hub.modules.collapse import normalized_entropy_of_probabilities as normalized_entropy_of_probabilities
from ssl_hub.modules.collapse import std_of_l2_normalized as std_of_l2_normalized
