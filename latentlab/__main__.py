"""`python -m latentlab` (also what `torchrun -m latentlab` runs)."""

from latentlab.cli.app import main

main()
