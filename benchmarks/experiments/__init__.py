"""One-off measurements behind docs/results.md's and benchmarks/results/' figures, run from a checkout
(`python -m polydistill.benchmarks.experiments.NAME`); not shipped in the wheel. Each writes JSON and Markdown
with the command that made them (polydistill.benchmarks.outputs)."""
