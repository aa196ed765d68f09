"""`python -m latentlab.bench CONFIG [options]`: measure one configuration, print one JSON line."""

import os

from latentlab.bench.runner import main

os.environ.setdefault("PYTHONHASHSEED", "0")  # for the processes torch.compile starts
main()
