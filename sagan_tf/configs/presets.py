"""Named experiment presets, chosen by data set; flags and overrides refine them."""

import dataclasses

from sagan_tf.configs import experiment


def _preset(model, data, train, optimizer=experiment.OptimizerConfig(),
            runtime=experiment.RuntimeConfig()):
  return experiment.ExperimentConfig(model=model, data=data, optimizer=optimizer, train=train,
                                     runtime=runtime)


def imagenet2012():
  """The paper's ImageNet 128x128 run: width 64, batch 256, 1M steps (Sec. 5)."""
  return _preset(
      experiment.ModelConfig(image_size=128, num_classes=1000, g_width=64, d_width=64),
      experiment.DataConfig(dataset="imagenet2012", shuffle_buffer=100_000),
      experiment.TrainConfig(batch_size=256, train_steps=1_000_000, checkpoint_every=5000,
                             sample_every=5000, summary_every=200, steps_per_loop=100))


def official():
  """The official TF1 code's exact semantics (see `official-sagan.md`).

  Differs from `imagenet2012` in what reproduces the official graph rather
  than what trains better: G update before D update, spectral-norm gradients
  as the TF1 ref variables compute them, and the Bessel-corrected moving
  variance in G's last batch norm.
  """
  config = imagenet2012()
  return dataclasses.replace(
      config,
      model=dataclasses.replace(config.model, sn_gradient="official", g_bn_bessel=True),
      train=dataclasses.replace(config.train, g_first=True))


def cifar10():
  """32x32 CIFAR-10, conditional, in the batch-64 regime of the peers."""
  return _preset(
      experiment.ModelConfig(image_size=32, num_classes=10, g_width=64, d_width=64),
      experiment.DataConfig(dataset="cifar10"),
      experiment.TrainConfig(batch_size=64, train_steps=100_000, checkpoint_every=2000,
                             sample_every=2000, summary_every=100, steps_per_loop=50))


def animal_mnist():
  """The embedded default: 10 animal classes at 32x32, small enough for a CPU.

  About eleven minutes on two CPU cores with its two evaluations (1,800
  steps at batch 32, ~3.3 steps/s in bfloat16 where the CPU has AVX512_BF16;
  in float32 elsewhere, ~2 steps/s). Each choice beyond the paper's recipe
  was measured on this data set (2,000-sample FID and class consistency,
  README "A better default run"):
  - grey output (`model.grayscale`): the silhouettes are grey, and colour
    noise in RGB samples alone cost ~35 FID;
  - learning rates twice the paper's (same 1:2 TTUR ratio): classes are
    learnt within the short run (class consistency 0.74 -> 0.84);
  - a generator weight average (0.99 from step 600);
  - batch-norm moving averages that decay faster than the paper's (0.99
    instead of 0.999/0.9999): with the paper's values they would still be
    near their initial values after 1,800 steps, and inference-mode
    samples would be grey.
  """
  return _preset(
      experiment.ModelConfig(image_size=32, num_classes=10, g_width=16, d_width=16,
                             cbn_momentum=0.99, g_bn_momentum=0.99, grayscale=True),
      experiment.DataConfig(dataset="animal_mnist"),
      experiment.TrainConfig(batch_size=32, train_steps=1800, checkpoint_every=300,
                             sample_every=300, summary_every=50, steps_per_loop=25,
                             ema_decay=0.99, ema_start_step=600, eval_every=900, eval_samples=500),
      optimizer=experiment.OptimizerConfig(g_learning_rate=4e-4, d_learning_rate=8e-4),
      runtime=experiment.RuntimeConfig(mixed_precision="auto"))


def celeb_a():
  """64x64 CelebA faces, unconditional, with 5 D steps (brain-research#15)."""
  return _preset(
      experiment.ModelConfig(image_size=64, num_classes=0, g_width=64, d_width=64),
      experiment.DataConfig(dataset="celeb_a"),
      experiment.TrainConfig(batch_size=64, train_steps=100_000, d_steps=5))


PRESETS = {
    "animal_mnist": animal_mnist,
    "imagenet2012": imagenet2012,
    "official": official,
    "cifar10": cifar10,
    "celeb_a": celeb_a,
}


def preset_for_dataset(dataset):
  """The preset for a data set name; unknown names get a generic 64x64 one."""
  base = dataset.split(":", 1)[0].split("/", 1)[0]
  if base in PRESETS:
    return PRESETS[base]()
  generic = _preset(
      experiment.ModelConfig(image_size=64, num_classes=1000, g_width=32, d_width=32),
      experiment.DataConfig(dataset=dataset),
      experiment.TrainConfig(batch_size=64, train_steps=100_000))
  return generic
