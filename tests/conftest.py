"""Shared test setup: two logical CPU devices, quiet TensorFlow, seeds and NumPy references."""

import os
import types
import warnings

# The C++ log level is read when TensorFlow loads, so it is set before the import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# XLA's CPU backend builds machine code without LLVM's optimisations (-O0):
# the XLA tests compare what XLA computes, which is fixed by the HLO before
# LLVM runs; -O0 only makes the code slower to run and ~40% faster to build
# (18 s -> 11 s for the tiny training step). Users' runs keep XLA's default.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

SEED = 1234


def _split_cpu():
  """Splits the CPU into CPU:0 and CPU:1 so MirroredStrategy tests run without GPUs.

  Logical devices can only be configured before the TF runtime initialises,
  hence at conftest import; a configuration already present is kept.
  """
  cpu = tf.config.list_physical_devices("CPU")[0]
  if tf.config.get_logical_device_configuration(cpu):
    return
  try:
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  except RuntimeError as error:
    # Only the two-device tests need the split; they fail in `mirrored_strategy`.
    warnings.warn(f"could not split the CPU into two logical devices: {error}")


_split_cpu()


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: end-to-end tests that still run in CI")


# The modules with the longest tests, longest first (from `--durations`). The
# README runs the suite on two pytest-xdist workers with `--dist loadscope
# --no-loadscope-reorder`, which hands out whole modules in collection order:
# starting these first keeps one long module from running alone at the end.
# Order changes only the wall time, never a result.
LONG_MODULES_FIRST = (
    "tests/training/trainer_eval_test.py",
    "tests/training/step_test.py",
    "tests/reliability/preemption_test.py",
    "tests/reliability/determinism_test.py",
    "tests/training/trainer_test.py",
    "tests/reliability/divergence_test.py",
    "tests/training/diffaugment_test.py",
    "tests/reliability/disk_full_test.py",
    "tests/training/step_graph_test.py",
    "tests/training/checkpoints_test.py",
    "tests/reliability/bad_input_test.py",
    "tests/train_cli_test.py",
    "tests/readme_test.py",
    "tests/reliability/corrupt_files_test.py",
    "tests/reliability/resume_changes_test.py",
    "tests/console_test.py",
    "tests/models/models_test.py",
    "tests/training/multi_worker_test.py",
    "tests/official_parity_test.py",
)


def pytest_collection_modifyitems(config, items):
  del config
  rank = {name: index for index, name in enumerate(LONG_MODULES_FIRST)}
  items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


@pytest.fixture(autouse=True)
def _fresh_keras_state():
  """Each test starts from the same seed, layer-name counters and float32 policy.

  free_memory=False: the default also runs gc.collect(), which walks every
  traced graph the worker process holds, about 1 s per test late in a
  session (790 s of the suite's 2,750 s summed test time); Python's own
  collector still runs.
  """
  keras.backend.clear_session(free_memory=False)
  keras.utils.set_random_seed(SEED)
  yield
  keras.mixed_precision.set_global_policy("float32")
  keras.backend.set_floatx("float32")


@pytest.fixture
def rng():
  return np.random.default_rng(SEED)


@pytest.fixture(scope="session")
def mirrored_strategy():
  """MirroredStrategy over the two logical CPUs made at import."""
  if len(tf.config.list_logical_devices("CPU")) < 2:
    pytest.fail("conftest could not create two logical CPU devices (TF initialised too early)")
  from sagan_tf.training import distribute  # pylint: disable=g-import-not-at-top
  # The process's one strategy over these devices, shared with the Trainers tests build.
  return distribute.mirrored_strategy(["CPU:0", "CPU:1"])


def split_batch(strategy, *arrays):
  """Per-replica values: replica i gets the i-th equal slice of each global array."""
  replicas = strategy.num_replicas_in_sync

  def slice_for(context):
    index = context.replica_id_in_sync_group
    return tuple(np.split(a, replicas)[index] for a in arrays)

  return strategy.experimental_distribute_values_from_function(slice_for)


def local_values(strategy, value):
  """NumPy copies of each replica's component of a per-replica tensor or Keras variable."""
  value = getattr(value, "value", value)
  return [np.asarray(v) for v in strategy.experimental_local_results(value)]


# NumPy references, written from the official SAGAN code (official-sagan.md
# sections 3-5), independently of the library, in float64.

def l2n(x, epsilon=1e-12):
  return x / (np.sqrt(np.sum(np.square(x))) + epsilon)


def sn_matrix(kernel, embedding=False):
  """W as [K, C_out]: kernels reshaped row-major, embedding tables transposed."""
  kernel = np.asarray(kernel, np.float64)
  return kernel.T if embedding else kernel.reshape(-1, kernel.shape[-1])


def sn_step(w, u, epsilon=1e-12):
  """One official power iteration: v = l2n(u W^T), u' = l2n(v W), sigma = v W u'^T."""
  u = np.asarray(u, np.float64)
  v = l2n(u @ w.T, epsilon)
  u_new = l2n(v @ w, epsilon)
  sigma = float((v @ w @ u_new.T)[0, 0])
  return u_new, v, sigma


def sn_kernel(sn_layer):
  """(W / sigma in the kernel's own shape, u', sigma) from an SN layer's variables."""
  embedding = isinstance(sn_layer.layer, keras.layers.Embedding)
  kernel = np.asarray(sn_layer.kernel.numpy(), np.float64)
  u_new, _, sigma = sn_step(sn_matrix(kernel, embedding), sn_layer.u.numpy(), sn_layer.epsilon)
  return kernel / sigma, u_new, sigma


def conv2d_same(x, kernel, bias=None):
  """Stride-1 SAME convolution of NHWC x with an odd [kh, kw, C_in, C_out] kernel."""
  x = np.asarray(x, np.float64)
  kh, kw = kernel.shape[:2]
  padded = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
  height, width = x.shape[1:3]
  out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
  for i in range(kh):
    for j in range(kw):
      out += np.einsum("bhwc,cd->bhwd", padded[:, i:i + height, j:j + width], kernel[i, j])
  return out if bias is None else out + bias


def _pool_windows(x):
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c)


def max_pool2(x):
  return _pool_windows(x).max(axis=(2, 4))


def avg_pool2(x):
  return _pool_windows(x).mean(axis=(2, 4))


def upsample2(x):
  return np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)


def batch_norm(x, mean, variance, gamma, beta, epsilon):
  return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def softmax(x, axis=-1):
  e = np.exp(x - x.max(axis=axis, keepdims=True))
  return e / e.sum(axis=axis, keepdims=True)


@pytest.fixture(scope="session")
def np_ref():
  """The NumPy reference functions above, as one namespace."""
  return types.SimpleNamespace(
      l2n=l2n, sn_matrix=sn_matrix, sn_step=sn_step, sn_kernel=sn_kernel, conv2d_same=conv2d_same,
      max_pool2=max_pool2, avg_pool2=avg_pool2, upsample2=upsample2, batch_norm=batch_norm,
      softmax=softmax)


@pytest.fixture(scope="session")
def per_replica():
  """Helpers that split global arrays over replicas and read replica-local results."""
  return types.SimpleNamespace(split=split_batch, local=local_values)
