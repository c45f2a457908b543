"""The workflow's stages: one module per rule file in workflow/rules/, the same name, run by `actloc <stage>`."""
