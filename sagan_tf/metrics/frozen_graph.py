"""Runs the TF1 frozen graph `classify_image_graph_def.pb` (2015-12-05 Inception) in TF2."""

import google.protobuf.message
import tensorflow as tf

# The graph decodes one JPEG, casts it and adds a batch axis ("ExpandDims"), then resizes
# it with its own legacy ResizeBilinear and scales it. Feeding a batch in place of
# ExpandDims:0 (as TTUR does) keeps the graph's own resize and normalisation.
INPUT_TENSOR = "ExpandDims:0"
POOL_3_TENSOR = "pool_3:0"
# The graph's logits reshape pool_3 to a hard-coded batch of 1, so the logits are
# rebuilt from this MatMul's weight input; like OpenAI's Inception Score code, the
# softmax bias is left out.
LOGITS_MATMUL = "softmax/logits/MatMul"
NUM_LOGITS = 1008
_REQUIRED_NODES = ("ExpandDims", "pool_3", LOGITS_MATMUL)


def read_graph_def(path):
  """Parses a binary GraphDef and checks that it has the Inception tensors.

  Args:
    path: Path of `classify_image_graph_def.pb`.

  Returns:
    A `tf.compat.v1.GraphDef`.

  Raises:
    ValueError: If the file is not a parsable GraphDef (e.g. truncated) or lacks the
      `ExpandDims`, `pool_3` or `softmax/logits/MatMul` nodes; the message names the file.
  """
  with open(path, "rb") as f:
    data = f.read()
  graph_def = tf.compat.v1.GraphDef()
  try:
    graph_def.ParseFromString(data)
  except google.protobuf.message.DecodeError as error:
    raise ValueError(
        f"Cannot parse {path} as a TF GraphDef ({error}); the file may be truncated or "
        "corrupt, or it is neither inception-2015-12-05.pt nor "
        "classify_image_graph_def.pb.") from error
  names = {node.name for node in graph_def.node}
  missing = [name for name in _REQUIRED_NODES if name not in names]
  if missing:
    raise ValueError(f"{path} is a GraphDef without the nodes {missing}, so it is not "
                     "classify_image_graph_def.pb from inception-2015-12-05.tgz.")
  for node in graph_def.node:
    # Shapes recorded at export time carry the graph's batch of 1; let the importer
    # infer them from the fed batch instead.
    if "_output_shapes" in node.attr:
      del node.attr["_output_shapes"]
  return graph_def


def load_frozen_graph(path):
  """Imports the frozen graph as a TF2 concrete function.

  Args:
    path: Path of `classify_image_graph_def.pb`.

  Returns:
    A function from a float32 tensor `(batch, height, width, 3)` with values in
    [0, 255] to a dict with `"pool_3"`, `(batch, 2048)`, and `"logits"`,
    `(batch, 1008)`, both float32.

  Raises:
    ValueError: As `read_graph_def`.
  """
  graph_def = read_graph_def(path)

  def import_graph(images):
    pool_3, matmul = tf.compat.v1.import_graph_def(
        graph_def, input_map={INPUT_TENSOR: images},
        return_elements=[POOL_3_TENSOR, LOGITS_MATMUL], name="inception")
    features = tf.reshape(pool_3, [tf.shape(pool_3)[0], pool_3.shape[-1]])
    return {"pool_3": features, "logits": tf.matmul(features, matmul.inputs[1])}

  wrapped = tf.compat.v1.wrap_function(
      import_graph, [tf.TensorSpec([None, None, None, 3], tf.float32)])
  # Pruning drops the JPEG decoder and the batch-1 logits path, which cannot run.
  return wrapped.prune(wrapped.inputs[0], wrapped.structured_outputs)
