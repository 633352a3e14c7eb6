"""Adversarial losses as pure functions of discriminator logits."""

from keras import ops


def discriminator_hinge_loss(real_logits, fake_logits):
  """mean(relu(1 - D(x))) + mean(relu(1 + D(G(z)))) (SAGAN Eq. 3).

  Returns:
    (total, real term, fake term), float32 scalars.
  """
  real = ops.mean(ops.relu(1.0 - real_logits))
  fake = ops.mean(ops.relu(1.0 + fake_logits))
  return real + fake, real, fake


def generator_hinge_loss(fake_logits):
  """-mean(D(G(z))) (SAGAN Eq. 3)."""
  return -ops.mean(fake_logits)


def discriminator_non_saturating_loss(real_logits, fake_logits):
  """softplus(-D(x)) + softplus(D(G(z))): the cross-entropy of Goodfellow et al. 2014."""
  real = ops.mean(ops.softplus(-real_logits))
  fake = ops.mean(ops.softplus(fake_logits))
  return real + fake, real, fake


def generator_non_saturating_loss(fake_logits):
  """softplus(-D(G(z))): the non-saturating generator loss."""
  return ops.mean(ops.softplus(-fake_logits))


LOSSES = {
    "hinge": (discriminator_hinge_loss, generator_hinge_loss),
    "non_saturating": (discriminator_non_saturating_loss, generator_non_saturating_loss),
}


def get_losses(name):
  """(discriminator_loss, generator_loss) for "hinge" or "non_saturating"."""
  if name not in LOSSES:
    raise ValueError(f"loss must be one of {sorted(LOSSES)}, received {name!r}")
  return LOSSES[name]
