"""Trainer integration: callbacks, schedules, and the ``pretrain`` entry point."""

from ssl_hub.training.arguments import PretrainingArguments as PretrainingArguments
from ssl_hub.training.arguments import training_arguments as training_arguments
from ssl_hub.training.callbacks import DatasetEpochCallback as DatasetEpochCallback
from ssl_hub.training.callbacks import EMAUpdateCallback as EMAUpdateCallback
from ssl_hub.training.callbacks import FixedLearningRateCallback as FixedLearningRateCallback
from ssl_hub.training.callbacks import FreezeParametersCallback as FreezeParametersCallback
from ssl_hub.training.callbacks import LinearEMAUpdateCallback as LinearEMAUpdateCallback
from ssl_hub.training.callbacks import LossMonitor as LossMonitor
from ssl_hub.training.callbacks import MethodMetricsCallback as MethodMetricsCallback
from ssl_hub.training.callbacks import NonFiniteLossError as NonFiniteLossError
from ssl_hub.training.callbacks import WeightDecayScheduleCallback as WeightDecayScheduleCallback
from ssl_hub.training.callbacks import trainer_steps_per_epoch as trainer_steps_per_epoch
from ssl_hub.training.pretrain import PretrainResult as PretrainResult
from ssl_hub.training.pretrain import pretrain as pretrain
from ssl_hub.training.schedules import cosine_schedule as cosine_schedule
from ssl_hub.training.schedules import linear_schedule as linear_schedule
from ssl_hub.training.schedules import linear_warmup_schedule as linear_warmup_schedule
from ssl_hub.training.schedules import steps_per_epoch as steps_per_epoch
