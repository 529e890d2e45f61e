"""The stages a recipe lists, one module per group; `polydistill.pipeline.STAGE_FUNCTIONS` runs them in order."""
