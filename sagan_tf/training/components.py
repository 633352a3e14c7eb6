"""Everything a training run computes with: models, optimizers, counters, weight average, the step.

`build_components` is the one place that puts them together; the Trainer
(train.py) and bench/ both call it, so what is benchmarked is what trains.
"""

import dataclasses
from typing import Any, Optional

import keras
import tensorflow as tf

from sagan_tf.models.build import build_from_config, build_models
from sagan_tf.training.ema import WeightAverage
from sagan_tf.training.optimizers import make_optimizers, replica_local_variables
from sagan_tf.training.step import TrainStep

# runtime.mixed_precision -> Keras dtype policy.
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


@dataclasses.dataclass
class TrainingComponents:
  """The trained state and the step that updates it (see `build_components`)."""
  generator: Any
  discriminator: Any
  g_optimizer: Any
  d_optimizer: Any
  step: tf.Variable
  rng: tf.random.Generator
  ema_generator: Optional[Any]
  ema: Optional[WeightAverage]
  train_step: TrainStep


def build_components(config, strategy, stop_flag=None, noise_fn=None):
  """Builds the models, optimizers, step counter, RNG, weight average and `TrainStep` of `config`.

  Seeds Keras from `config.runtime.seed` first, so the initial weights
  depend on the seed only. All state lives in `strategy.scope()`; the
  optimizers' and the weight average's variables are replica-local (see
  `optimizers.replica_local_variables`).

  Args:
    config: an ExperimentConfig with `model.num_classes` resolved.
    strategy: the tf.distribute strategy.
    stop_flag, noise_fn: passed to `TrainStep`.
  """
  runtime = config.runtime
  policy = POLICIES[runtime.mixed_precision]
  keras.utils.set_random_seed(runtime.seed)
  with strategy.scope():
    generator, discriminator = build_from_config(config.model, dtype=policy)
    with replica_local_variables():
      g_optimizer, d_optimizer = make_optimizers(config.optimizer, runtime.mixed_precision)
      g_optimizer.build(generator.trainable_variables)
      d_optimizer.build(discriminator.trainable_variables)
      step = tf.Variable(0, dtype=tf.int64, name="step", trainable=False)
      ema_generator, ema = None, None
      if config.train.ema_decay > 0:
        # Only the generator is averaged, and ema.copy() sets all its values:
        # no discriminator is built for it and no orthogonal kernels are drawn.
        ema_generator, _ = build_from_config(dataclasses.replace(config.model, init="official"),
                                             dtype=policy, build=False)
        build_models(ema_generator)
        ema = WeightAverage(generator, ema_generator, config.train.ema_decay,
                            config.train.ema_start_step)
        ema.copy()
    rng = tf.random.Generator.from_seed(runtime.seed)
    train_step = TrainStep(generator, discriminator, g_optimizer, d_optimizer, strategy,
                           config.train, rng, step, ema=ema, jit_compile=runtime.jit_compile,
                           stop_flag=stop_flag, noise_fn=noise_fn,
                           d_sn_update=config.model.d_sn_update, seed=runtime.seed)
  return TrainingComponents(generator, discriminator, g_optimizer, d_optimizer, step, rng,
                            ema_generator, ema, train_step)
