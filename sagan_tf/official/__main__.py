"""`python -m sagan_tf.official`: see `sagan_tf.official.cli`."""

if __name__ == "__main__":
  # Keep TensorFlow's log lines off the console; before it is imported (the
  # package's __init__ imports nothing heavy, see there).
  from sagan_tf import console
  console.setup()
  from sagan_tf.official import cli  # pylint: disable=g-import-not-at-top
  cli.main()
