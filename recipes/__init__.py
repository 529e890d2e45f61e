"""The recipes, shipped as package data (`polydistill.recipes`): `distill recipes list`, `distill recipes copy NAME`."""
