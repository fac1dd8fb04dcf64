"""The commands of ``facestream``, one module each (``serve.py`` is the default, run without a
command word). Every module ends with its :class:`~.common.Command`: the word, the shared
options it takes, its parser and its ``run``; ``facestream/cli.py`` holds the table of them and
dispatches. What they share (those options, loading the config, the data-dir checks, opening
the gallery and the worker pool) is in ``common.py``."""
