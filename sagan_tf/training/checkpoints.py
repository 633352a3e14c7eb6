"""The object graph of a run's checkpoints, in which every variable has a readable name.

TensorFlow names a variable in a checkpoint by the shortest path to it in the
object graph. With the Keras models and optimizers themselves as children of
the checkpoint, that path runs through the optimizer for every trained weight
(`g_optimizer/_trainable_variables/12/...`), and nothing tells a kernel from
a bias. `RunCheckpoint` puts under each of its names a `VariableTree` of that
object's variables instead, nested by their Keras `path` without the owner's
name, so that

  generator/g_block1/snconv1/snconv1/kernel/.ATTRIBUTES/VARIABLE_VALUE
  ema_generator/g_block1/snconv1/snconv1/kernel/.ATTRIBUTES/VARIABLE_VALUE
  g_optimizer/generator_g_block1_snconv1_snconv1_kernel_momentum/.ATTRIBUTES/VARIABLE_VALUE

are what `tf.train.list_variables` shows, and `checkpoint_key` gives the name
of any variable. The models and optimizers are reached only through the trees,
so no variable has a second, shorter name.

Checkpoints written before this layout (format 1: the objects themselves as
children) carry no `checkpoint_format` variable; `RunCheckpoint.read` restores
them through that structure, which `legacy` rebuilds from the same objects.
"""

import keras
import tensorflow as tf

FORMAT_VERSION = 2
FORMAT_NAME = "checkpoint_format"
_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def relative_path(variable, owner):
  """`variable.path` without the leading name of its model or optimizer `owner`."""
  prefix = f"{owner.name}/"
  return variable.path[len(prefix):] if variable.path.startswith(prefix) else variable.path


def checkpoint_key(root_name, relative):
  """The name `tf.train.list_variables` shows for the variable at `relative` under `root_name`."""
  # TensorFlow escapes "." in object names as "..".
  parts = [root_name] + relative.split("/")
  return "/".join(part.replace(".", "..") for part in parts) + _VALUE_SUFFIX


class _Node(tf.__internal__.tracking.Trackable):
  """An inner node of a VariableTree: one component of the variables' paths."""

  def __init__(self):
    super().__init__()
    self._maybe_initialize_trackable()

  def _child(self, name):
    node = self._lookup_dependency(name)
    if node is None:
      node = self._track_trackable(_Node(), name)
    elif not isinstance(node, _Node):
      raise ValueError(f"path component {name!r} names both a variable and a layer")
    return node


class VariableTree(_Node):
  """The variables of a Keras model or optimizer, as checkpoint children named by their paths.

  Attributes:
    source: the model or optimizer (not a checkpoint dependency: only its
      variables are).
    variables: {relative path: variable}, in the order of `source.variables`.
  """

  def __init__(self, source):
    super().__init__()
    if isinstance(source, keras.optimizers.Optimizer) and not source.built:
      raise ValueError(f"optimizer {source.name} is not built: build it before making its "
                       "checkpoint, or its slots are left out")
    self.source = source
    self.variables = {}
    seen = set()
    for variable in source.variables:
      if id(variable) in seen:
        continue
      seen.add(id(variable))
      name = relative_path(variable, source)
      if name in self.variables:
        raise ValueError(f"two variables of {source.name} have the path {name!r}")
      self.variables[name] = variable
      *parents, leaf = name.split("/")
      node = self
      for part in parents:
        node = node._child(part)  # pylint: disable=protected-access
      node._track_trackable(variable, leaf)  # pylint: disable=protected-access


def _is_tree_source(value):
  return isinstance(value, (keras.Model, keras.optimizers.Optimizer))


class RunCheckpoint(tf.train.Checkpoint):
  """The tf.train.Checkpoint of a run: models and optimizers as VariableTrees, the rest as is.

  Reads checkpoints of both layouts. Objects assigned as attributes later
  (the trainer's data iterator) are children as in any tf.train.Checkpoint.
  """

  def __init__(self, **objects):
    children = {name: VariableTree(value) if _is_tree_source(value) else value
                for name, value in objects.items()}
    with tf.init_scope():
      children[FORMAT_NAME] = tf.Variable(FORMAT_VERSION, dtype=tf.int64, trainable=False,
                                          name=FORMAT_NAME)
    super().__init__(**children)

  def trees(self):
    """{checkpoint name: VariableTree}."""
    return {name: child for name, child in self._trackable_children().items()
            if isinstance(child, VariableTree)}

  def legacy(self):
    """A tf.train.Checkpoint of the same objects, as checkpoints of format 1 hold them."""
    children = {name: child.source if isinstance(child, VariableTree) else child
                for name, child in self._trackable_children().items()
                if name not in (FORMAT_NAME, "save_counter")}
    return tf.train.Checkpoint(**children)

  def read(self, save_path, options=None):
    if save_path is not None and checkpoint_format(save_path) == 1:
      return self.legacy().read(save_path, options)
    return super().read(save_path, options)


def checkpoint_format(save_path):
  """FORMAT_VERSION for a checkpoint with readable names, 1 for one written before them.

  None when the checkpoint cannot be listed; reading it then fails with
  TensorFlow's own error.
  """
  try:
    names = {name for name, _ in tf.train.list_variables(save_path)}
  except Exception:  # pylint: disable=broad-except
    return None
  return FORMAT_VERSION if FORMAT_NAME + _VALUE_SUFFIX in names else 1
